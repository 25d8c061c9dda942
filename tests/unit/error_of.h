// The Error a call throws, for tests that check codes and messages.
#pragma once

#include "core/error.h"

namespace ephemera::test {

// The Error `f` throws; kInternal "(no error)" when it returns.
template <typename F>
Error ErrorOf(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  return Error(ErrorCode::kInternal, "(no error)");
}

}  // namespace ephemera::test
