#pragma once

// The two CRC32C implementations behind Crc32cUpdate, exposed for tests and benchmarks only.

#include <cstddef>
#include <cstdint>

namespace smad::nvme::tcp::internal {

// Table-driven (slicing-by-8); works on every CPU.
uint32_t Crc32cUpdatePortable(uint32_t crc, const void* data, size_t size);

// Whether this CPU has the SSE4.2 crc32 instruction (always false off x86-64).
bool Crc32cHardwareAvailable();

// SSE4.2 crc32 instruction. Call only when Crc32cHardwareAvailable(); elsewhere it falls back to the
// portable form.
uint32_t Crc32cUpdateHardware(uint32_t crc, const void* data, size_t size);

}  // namespace smad::nvme::tcp::internal
