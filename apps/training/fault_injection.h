// Test-only fault injection, so that the multi-process tests can make one rank fail on purpose. Read from the
// environment once; with QIL_TEST_FAULT unset (every real run) it does nothing.
//   QIL_TEST_FAULT=throw|kill|hang|diverge   what happens: an engine::Error is thrown, the process sends
//                                            itself SIGKILL, it sleeps for ever, or one parameter element
//                                            moves by 1e-3 (for the divergence guard; enough to outlast the
//                                            rounding of later steps)
//   QIL_TEST_FAULT_RANK=r                    on which rank (default 0)
//   QIL_TEST_FAULT_STEP=k                    after this process's k-th optimizer step (default 1)
//   QIL_TEST_FAULT_PARAM=name                diverge: the parameter (default: the model's first)
// Not a user feature: nothing documents it outside docs/cluster.md's testing note and the tests.
#pragma once
#include <cstdint>

#include "layers/module.h"

namespace apps::training {

// Called after each optimizer step with this process's step count (1-based).
void inject_test_fault(int rank, int64_t step, layers::Module& model);

}  // namespace apps::training
