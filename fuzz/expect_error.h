// What every fuzz target checks of a parser: it returns a value or throws
// ephemera::Error (a clear error is the right answer to bad input); any
// other exception escapes and fails the run.
#pragma once

#include "core/error.h"

namespace ephemera::fuzz {

template <typename F>
void ExpectValueOrError(F parse) {
  try {
    parse();
  } catch (const ephemera::Error&) {
  }
}

}  // namespace ephemera::fuzz
