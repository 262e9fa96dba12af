// Runs an ONNX file in ONNX Runtime (npm's onnxruntime-node, CPU) on one float32 batch, for the ONNX export
// test (tests/apps/test_onnx_export.cpp) and by hand.
// Usage: node onnx_run.js MODEL.onnx INPUT.f32 N C H W OUTPUT.f32   (raw little-endian float32, C order)
// Needs onnxruntime-node where Node finds it (NODE_PATH, e.g. build/npm/node_modules).
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, input, n, c, h, w, output] = process.argv.slice(2);
  const dims = [n, c, h, w].map(Number);
  const buf = fs.readFileSync(input);
  const x = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  if (x.length !== dims.reduce((a, b) => a * b)) throw new Error(`${input}: ${x.length} floats, shape ${dims}`);
  const session = await ort.InferenceSession.create(model, {executionProviders: ['cpu']});
  const out = await session.run({input: new ort.Tensor('float32', x, dims)});
  const y = out.logits.data;
  fs.writeFileSync(output, Buffer.from(y.buffer, y.byteOffset, y.length * 4));
  console.log(`${model}: logits ${out.logits.dims.join('x')}`);
}

main().catch((e) => {
  console.error(`onnx_run: ${e.message || e}`);
  process.exit(1);
});
