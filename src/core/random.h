// Randomness from the kernel's CSPRNG (getrandom(2)); never a userspace PRNG.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace ephemera {

void FillRandom(std::span<std::byte> out);

// A string of `length` characters drawn uniformly from `alphabet`
// (rejection sampling, so no character is favoured).
std::string RandomString(std::size_t length, std::string_view alphabet);

inline constexpr std::string_view kAlphanumeric =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

}  // namespace ephemera
