// NumPy `.npy` files of float32 arrays, the exchange format of `qil predict`: a strict reader (format versions
// 1.0 and 2.0; dtype '<f4' in C order only) and a writer (version 1.0, '<f4', C order), following the format
// description in numpy/lib/format.py. Not a general NumPy reader: no other dtypes, no Fortran order, no
// pickled objects, no `.npz` archives. Every error names the file and the problem.
#pragma once
#include <cstdint>
#include <string>

#include "engine/tensor.h"

namespace apps {

// What the header dict of a `.npy` file says.
struct NpyHeader {
  std::string descr;  // e.g. "<f4"
  bool fortran_order = false;
  engine::Shape shape;
};

// Parses the header dict text ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" plus padding and
// the final newline). Checks its syntax and that it has exactly the three keys; not their values. `where`
// names the file in errors.
NpyHeader parse_npy_header(const std::string& text, const std::string& where);

// The complete header of a version 1.0 file: magic, version, length and the dict padded with spaces and a
// newline so that the data starts at a multiple of 64 bytes, as NumPy writes it.
std::string npy_header_v1(const engine::Shape& shape);

// Reads a float32 array into a plain f32 tensor of the file's shape (a 0-d array becomes shape {}).
engine::Tensor read_npy(const std::string& path);
// Writes a plain f32 tensor; written to a temporary file and renamed over path.
void write_npy(const std::string& path, const engine::Tensor& t);

}  // namespace apps
