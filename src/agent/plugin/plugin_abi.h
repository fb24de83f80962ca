#pragma once

/**
 * @file plugin_abi.h
 * The C ABI between smad and its plugins (version 1).
 *
 * A plugin is a shared library that provides device managers (SMA's `DeviceManager`: a device type
 * such as "plugin1-device1" serving one CreateDeviceRequest protocol) and crypto engines (SMA's
 * `CryptoEngine`). It exports exactly one symbol, SMAD_PLUGIN_ENTRY_SYMBOL:
 *
 *     SMAD_PLUGIN_EXPORT const smad_plugin_v1* smad_plugin_entry(uint32_t host_abi_version);
 *
 * smad dlopen()s the library (RTLD_NOW | RTLD_LOCAL), calls the entry point, checks the returned
 * `abi_version`, then calls `register_plugin`, through which the plugin describes its device
 * managers and crypto engines. The library stays loaded for the life of the process.
 *
 * Only C types cross the boundary. SMA requests and responses cross it as serialized protobuf
 * messages of package `sma` (proto/sma/sma.proto): the protobuf wire format is the stable contract,
 * so a plugin may be written in any language and with any protobuf implementation. NOTE: a C++
 * plugin must not link a second copy of the generated sma.pb.cc descriptors into the smad process:
 * protobuf's generated pool aborts on a duplicate "sma.proto". Use a hand-written wire codec (as
 * plugins/example does), a runtime without a global pool (nanopb, upb), or protoc's lite mode under
 * a different proto package.
 *
 * Memory ownership, in one rule: whoever receives bytes copies them. Every pointer passed across
 * the boundary is valid only for the duration of the call, except where stated otherwise. Output
 * travels through a smad_sink provided by the receiving side, which copies what it is given; so no
 * side ever frees memory the other allocated.
 *
 * Status codes are gRPC's (== absl::StatusCode): 0 OK, 2 UNKNOWN, 3 INVALID_ARGUMENT, 5 NOT_FOUND,
 * 6 ALREADY_EXISTS, 9 FAILED_PRECONDITION, 12 UNIMPLEMENTED, 13 INTERNAL, 14 UNAVAILABLE... A
 * non-OK code from a device-manager callback reaches the SMA client with the message the plugin
 * wrote (as SMA's DeviceException does); codes outside 0..16 become UNKNOWN.
 *
 * Versioning: SMAD_PLUGIN_ABI_VERSION changes on any incompatible change. Compatible additions
 * append fields to the structs below; every struct starts with `struct_size` (set it to sizeof the
 * struct you compiled against) and the reader ignores fields beyond it.
 *
 * Thread safety: smad may call the callbacks of one instance concurrently from several threads (it
 * serialises calls for one device handle, not across handles), so instances must synchronise their
 * own mutable state. Host functions (smad_host_v1) may be called from any thread, concurrently, but
 * only from within a callback or while the instance is alive (between create_instance and
 * destroy_instance). No callback may unwind (C++ exceptions, longjmp) across the boundary.
 */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The ABI version this header describes. */
#define SMAD_PLUGIN_ABI_VERSION 1u

/** The name of the one symbol a plugin exports. */
#define SMAD_PLUGIN_ENTRY_SYMBOL "smad_plugin_entry"

/** Marks the entry point for export (plugins may build with -fvisibility=hidden). */
#define SMAD_PLUGIN_EXPORT __attribute__((visibility("default")))

/** gRPC status codes used by the callbacks (the full set is gRPC's; these are the common ones). */
enum {
  SMAD_STATUS_OK = 0,
  SMAD_STATUS_UNKNOWN = 2,
  SMAD_STATUS_INVALID_ARGUMENT = 3,
  SMAD_STATUS_NOT_FOUND = 5,
  SMAD_STATUS_ALREADY_EXISTS = 6,
  SMAD_STATUS_FAILED_PRECONDITION = 9,
  SMAD_STATUS_UNIMPLEMENTED = 12,
  SMAD_STATUS_INTERNAL = 13,
  SMAD_STATUS_UNAVAILABLE = 14,
};

/**
 * A write-only byte sink, implemented by the side that wants the bytes. The writer calls `assign`,
 * which copies `len` bytes from `data` (replacing anything assigned before; `data` may be NULL when
 * `len` is 0). `assign` does not fail (an implementation that runs out of memory aborts). A sink is
 * valid only for the call it was passed to.
 */
typedef struct smad_sink {
  void* opaque;
  void (*assign)(void* opaque, const void* data, size_t len);
} smad_sink;

/** Convenience: assigns `len` bytes. */
static inline void smad_sink_assign(smad_sink* sink, const void* data, size_t len) {
  sink->assign(sink->opaque, data, len);
}

/** Convenience: assigns a NUL-terminated string (without its terminator). */
static inline void smad_sink_assign_str(smad_sink* sink, const char* text) {
  size_t len = 0;
  while (text[len] != '\0') ++len;
  sink->assign(sink->opaque, text, len);
}

/** Log levels of smad_host_v1::log. */
enum { SMAD_LOG_DEBUG = 0, SMAD_LOG_INFO = 1, SMAD_LOG_WARN = 2, SMAD_LOG_ERROR = 3 };

/**
 * What smad offers each plugin instance. Passed to create_instance; valid until destroy_instance
 * returns. All functions are thread safe.
 */
typedef struct smad_host_v1 {
  uint32_t struct_size;
  /** Host-private; do not touch. */
  void* opaque;

  /**
   * Writes the name of the active crypto engine (the config's `crypto.name`, "nop" by default) into
   * `name`. SPDK's test plugins embed it in their device handles.
   * @param host this struct.
   * @param name receives the name (no terminator).
   */
  void (*active_crypto_engine)(const struct smad_host_v1* host, smad_sink* name);

  /**
   * Issues one JSON-RPC call to smad's target (SPDK or smad-tgt) and waits for the answer.
   * Blocking: call it only from a callback, never while holding a lock another callback may wait
   * on.
   * @param host this struct.
   * @param method the JSON-RPC method, e.g. "bdev_get_bdevs"; NUL-terminated.
   * @param params_json the params as JSON text (an object or array), or NULL / "" for none.
   * @param timeout_ms the call's timeout; 0 = the configured per-call timeout.
   * @param result_json on success receives the answer's `result` as JSON text; may be NULL.
   * @param error_message on failure receives a message; may be NULL.
   * @return SMAD_STATUS_OK, or: INVALID_ARGUMENT for params that are not valid JSON, the code smad
   * maps the target's error answer to (NOT_FOUND for -ENODEV/-ENOENT, ALREADY_EXISTS for -EEXIST,
   *   INVALID_ARGUMENT for -EINVAL/-32602, UNIMPLEMENTED for -32601, INTERNAL otherwise; the
   * message then ends with "(code <jsonrpc code>)"), UNAVAILABLE when the target cannot be reached,
   *   DEADLINE_EXCEEDED (4) on timeout.
   */
  int32_t (*target_call)(const struct smad_host_v1* host, const char* method,
                         const char* params_json, uint32_t timeout_ms, smad_sink* result_json,
                         smad_sink* error_message);

  /**
   * Logs a line through smad's logger, prefixed with the plugin's path.
   * @param host this struct.
   * @param level one of SMAD_LOG_*.
   * @param message NUL-terminated text.
   */
  void (*log)(const struct smad_host_v1* host, int32_t level, const char* message);
} smad_host_v1;

/**
 * A volume as smad exposes it on a device (its SMA request carries only the volume's parameters).
 */
typedef struct smad_volume_exposure {
  /** Canonical lowercase UUID of the volume (also the UUID the host should see). */
  const char* volume_id;
  /** The bdev to expose: the volume's own bdev or the crypto bdev stacked on it. */
  const char* bdev_name;
  /**
   * In: the namespace ID smad recorded for this volume earlier (0: none; reuse it so a re-created
   * namespace keeps its ID). Out (attach_volume only): the ID the device exposes the volume under;
   * leave it unchanged when the device has no such notion (smad then records 1, meaning "exposed").
   */
  uint32_t nsid;
} smad_volume_exposure;

/**
 * A device manager, as SMA's Python `DeviceManager`. Every callback is optional: a NULL callback
 * behaves as SMA's NotImplementedError, i.e. the request fails with UNIMPLEMENTED "Method is not
 * implemented by selected device type", except owns_device (NULL: owns nothing) and
 * get_qos_capabilities (NULL: OK with an empty response, all capabilities false).
 *
 * Callbacks taking `request`/`request_len` receive a serialized sma.* message; those with
 * `response` write a serialized sma.* response into it. On failure they return a non-OK code and
 * may write a message into `error` (left empty, smad uses "<callback> failed").
 *
 * Idempotency: as every SMA method, create_device must succeed and return the same handle when the
 * device already exists (smad calls it again to re-create devices after a target restart), and
 * delete_device must succeed when the device is already gone.
 */
typedef struct smad_device_manager_v1 {
  uint32_t struct_size;
  /** The manager's name, as the config's `devices` list enables it ("plugin1-device1"). */
  const char* name;
  /** The CreateDeviceRequest `params` oneof member it serves: "nvme", "virtio_blk" or "nvmf_tcp".
   */
  const char* protocol;
  /** Non-zero: DeleteDevice may delete a device that still has volumes attached. */
  int32_t allow_delete_volumes;
  /** Passed to create_instance (or used as the instance when create_instance is NULL). */
  void* user_data;

  /**
   * Creates the state of one manager instance (smad creates one per enabled manager, at start).
   * @param user_data the field above.
   * @param host host services for this instance; valid until destroy_instance returns.
   * @return the instance passed to every other callback; NULL on failure (smad then fails to
   * start).
   */
  void* (*create_instance)(void* user_data, const smad_host_v1* host);
  /** Frees an instance. Optional. */
  void (*destroy_instance)(void* instance);

  /**
   * Called once after create_instance with the config entry's `params`.
   * @param params_json the params as JSON text ("null" when absent).
   * @return OK, or INVALID_ARGUMENT for bad params (fatal at start).
   */
  int32_t (*init)(void* instance, const char* params_json, smad_sink* error);

  /**
   * sma.CreateDeviceRequest -> sma.CreateDeviceResponse (whose `handle` must be non-empty).
   * NOTE: the request's `volume` is cleared: smad connects volumes itself and attaches them through
   * attach_volume (and never hands crypto keys to device managers).
   */
  int32_t (*create_device)(void* instance, const uint8_t* request, size_t request_len,
                           smad_sink* response, smad_sink* error);
  /** sma.DeleteDeviceRequest. */
  int32_t (*delete_device)(void* instance, const uint8_t* request, size_t request_len,
                           smad_sink* error);
  /**
   * sma.AttachVolumeRequest (its `volume` carries only `volume_id`: connection and crypto are
   * smad's), plus where smad wants the volume exposed. Must succeed when the volume is already
   * exposed.
   */
  int32_t (*attach_volume)(void* instance, const uint8_t* request, size_t request_len,
                           smad_volume_exposure* volume, smad_sink* error);
  /** sma.DetachVolumeRequest. Must succeed when the volume is not exposed or the device is gone. */
  int32_t (*detach_volume)(void* instance, const uint8_t* request, size_t request_len,
                           const smad_volume_exposure* volume, smad_sink* error);
  /**
   * Whether `handle` names a device of this manager. Must not block.
   * @param handle NUL-terminated; `handle_len` excludes the terminator.
   * @return non-zero when owned.
   */
  int32_t (*owns_device)(void* instance, const char* handle, size_t handle_len);
  /**
   * sma.SetQosRequest. In this ABI revision smad applies QoS limits itself (bdev_set_qos_limit on
   * the volume's bdev) and uses this field only to tell whether the manager supports QoS (NULL:
   * SetQos fails with UNIMPLEMENTED); it is reserved for passing requests through later.
   */
  int32_t (*set_qos)(void* instance, const uint8_t* request, size_t request_len, smad_sink* error);
  /** sma.GetQosCapabilitiesRequest -> sma.GetQosCapabilitiesResponse. */
  int32_t (*get_qos_capabilities)(void* instance, const uint8_t* request, size_t request_len,
                                  smad_sink* response, smad_sink* error);
} smad_device_manager_v1;

/**
 * Crypto parameters of a request. `key`/`key2` are secrets: never log them. Both are the ASCII text
 * of a hex string, NUL-terminated, with explicit lengths; `key2_len` 0 means "not given".
 */
typedef struct smad_crypto_params {
  const char* key;
  size_t key_len;
  const char* key2;
  size_t key2_len;
  /** sma.VolumeCryptoParameters.Cipher (an open enum: any value may arrive). */
  int32_t cipher;
  /** sma.VolumeCryptoParameters.TweakMode (open enum). */
  int32_t tweak_mode;
} smad_crypto_params;

/**
 * A crypto engine, as SMA's Python `CryptoEngine`. `setup` is required; NULL verify/cleanup
 * succeed. Failures: INVALID_ARGUMENT for parameters the engine refuses or that do not match the
 * volume, INTERNAL for target failures.
 */
typedef struct smad_crypto_engine_v1 {
  uint32_t struct_size;
  /** The engine's name, as the config's `crypto.name` selects it ("crypto-plugin1"). */
  const char* name;
  void* user_data;
  /** As in smad_device_manager_v1. */
  void* (*create_instance)(void* user_data, const smad_host_v1* host);
  void (*destroy_instance)(void* instance);
  /** Called once with the config's `crypto.params` as JSON text ("null" when absent). Optional. */
  int32_t (*init)(void* instance, const char* params_json, smad_sink* error);

  /**
   * Sets up encryption of a volume.
   * @param volume_id canonical lowercase UUID of the volume.
   * @param volume_bdev the volume's bdev.
   * @param params the request's crypto parameters (never NULL).
   * @param crypto_bdev receives the name of the bdev to expose instead of the volume's (left empty:
   *   expose `volume_bdev`).
   */
  int32_t (*setup)(void* instance, const char* volume_id, const char* volume_bdev,
                   const smad_crypto_params* params, smad_sink* crypto_bdev, smad_sink* error);
  /**
   * Checks a request against a volume set up earlier.
   * @param crypto_bdev what setup returned, "" when the volume has no crypto.
   * @param params the request's parameters; NULL when the request has none.
   */
  int32_t (*verify)(void* instance, const char* volume_id, const char* crypto_bdev,
                    const smad_crypto_params* params, smad_sink* error);
  /** Removes what setup created; must succeed when nothing is there. `crypto_bdev` may be "". */
  int32_t (*cleanup)(void* instance, const char* volume_id, const char* crypto_bdev,
                     smad_sink* error);
} smad_crypto_engine_v1;

/**
 * Handed to register_plugin; valid only during that call. The host copies each descriptor (strings
 * included), so descriptors may live on the plugin's stack; function pointers and user_data must
 * stay valid while the library is loaded.
 */
typedef struct smad_registrar_v1 {
  uint32_t struct_size;
  /** Host-private. */
  void* opaque;
  /**
   * @return OK, INVALID_ARGUMENT (malformed descriptor: empty name, unknown protocol, struct_size
   * too small), or ALREADY_EXISTS (name taken by smad or another plugin). Any failure makes the
   * whole load fail, and nothing of the plugin is registered.
   */
  int32_t (*add_device_manager)(const struct smad_registrar_v1* registrar,
                                const smad_device_manager_v1* manager);
  /** As add_device_manager; INVALID_ARGUMENT also when `setup` is NULL. */
  int32_t (*add_crypto_engine)(const struct smad_registrar_v1* registrar,
                               const smad_crypto_engine_v1* engine);
} smad_registrar_v1;

/** What the entry point returns: static storage owned by the plugin. */
typedef struct smad_plugin_v1 {
  /** The ABI the plugin was built for: SMAD_PLUGIN_ABI_VERSION. smad refuses any other. */
  uint32_t abi_version;
  /** A display name for logs (may be NULL). */
  const char* name;
  /**
   * Registers the plugin's device managers and crypto engines. Called once per load, on the loading
   * thread.
   * @param registrar the host's registrar.
   * @param error on failure, receives a message.
   * @return OK, or any other code to make the load fail.
   */
  int32_t (*register_plugin)(const smad_registrar_v1* registrar, smad_sink* error);
} smad_plugin_v1;

/**
 * The entry point's type.
 * @param host_abi_version the ABI smad speaks (SMAD_PLUGIN_ABI_VERSION of its build).
 * @return the plugin's descriptor, or NULL when it cannot work with that host.
 */
typedef const smad_plugin_v1* (*smad_plugin_entry_fn)(uint32_t host_abi_version);

#ifdef __cplusplus
}  // extern "C"
#endif
