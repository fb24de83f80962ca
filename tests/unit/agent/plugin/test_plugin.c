/*
 * Test plugins for plugin_loader_test.cc, one module per TEST_PLUGIN_* definition:
 *  NO_ENTRY       exports no entry point
 *  BAD_ABI        built for ABI version 999
 *  NULL_ENTRY     the entry point refuses the host (returns NULL)
 *  REGISTER_FAILS register_plugin fails with INVALID_ARGUMENT "boom"
 *  BAD_PROTOCOL   registers a manager with protocol "scsi"
 *  FULL           manager "test-full" (virtio_blk, allow_delete_volumes) implementing every
 * callback, and engine "test-crypto"; every call is recorded for the test to inspect (exported
 *                 test_* functions, looked up with dlsym), and the next result can be forced.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/plugin/plugin_abi.h"

#if defined(TEST_PLUGIN_NO_ENTRY)

SMAD_PLUGIN_EXPORT int smad_not_the_entry_point(void) { return 0; }

#elif defined(TEST_PLUGIN_BAD_ABI) || defined(TEST_PLUGIN_NULL_ENTRY) || \
    defined(TEST_PLUGIN_REGISTER_FAILS) || defined(TEST_PLUGIN_BAD_PROTOCOL)

static int32_t register_plugin(const smad_registrar_v1* registrar, smad_sink* error) {
#if defined(TEST_PLUGIN_REGISTER_FAILS)
  smad_sink_assign_str(error, "boom");
  return SMAD_STATUS_INVALID_ARGUMENT;
#else
  smad_device_manager_v1 manager;
  memset(&manager, 0, sizeof(manager));
  manager.struct_size = sizeof(manager);
  manager.name = "test-bad";
  manager.protocol = "scsi";
  return registrar->add_device_manager(registrar, &manager);
#endif
}

#if defined(TEST_PLUGIN_BAD_ABI)
static const smad_plugin_v1 kPlugin = {999, "bad abi", register_plugin};
#else
static const smad_plugin_v1 kPlugin = {SMAD_PLUGIN_ABI_VERSION, "test", register_plugin};
#endif

SMAD_PLUGIN_EXPORT const smad_plugin_v1* smad_plugin_entry(uint32_t host_abi_version) {
#if defined(TEST_PLUGIN_NULL_ENTRY)
  (void)kPlugin;
  return NULL;
#else
  return &kPlugin;
#endif
}

#elif defined(TEST_PLUGIN_FULL)

/* What the last callback saw. Tests run callbacks one at a time, so no locking. */
static char g_method[64];
static uint8_t g_request[4096];
static size_t g_request_len;
static char g_text[4096]; /* params JSON, handle, volume id + bdev, ... */
static uint32_t g_nsid_in;
static const smad_host_v1* g_host;
static int g_instances;

/* A forced result for the next callback (then back to OK). */
static int32_t g_next_code;
static char g_next_message[256];
static uint32_t g_next_nsid;

static void record(const char* method, const uint8_t* request, size_t len, const char* text) {
  strncpy(g_method, method, sizeof(g_method) - 1);
  g_request_len = len < sizeof(g_request) ? len : sizeof(g_request);
  if (g_request_len > 0) memcpy(g_request, request, g_request_len);
  g_text[0] = '\0';
  if (text != NULL) strncpy(g_text, text, sizeof(g_text) - 1);
}

static int32_t result(smad_sink* error) {
  int32_t code = g_next_code;
  if (code != SMAD_STATUS_OK && g_next_message[0] != '\0')
    smad_sink_assign_str(error, g_next_message);
  g_next_code = SMAD_STATUS_OK;
  g_next_message[0] = '\0';
  return code;
}

SMAD_PLUGIN_EXPORT void test_force_next(int32_t code, const char* message) {
  g_next_code = code;
  strncpy(g_next_message, message, sizeof(g_next_message) - 1);
}
SMAD_PLUGIN_EXPORT void test_force_nsid(uint32_t nsid) { g_next_nsid = nsid; }
SMAD_PLUGIN_EXPORT const char* test_last_method(void) { return g_method; }
SMAD_PLUGIN_EXPORT const uint8_t* test_last_request(size_t* len) {
  *len = g_request_len;
  return g_request;
}
SMAD_PLUGIN_EXPORT const char* test_last_text(void) { return g_text; }
SMAD_PLUGIN_EXPORT uint32_t test_last_nsid_in(void) { return g_nsid_in; }
SMAD_PLUGIN_EXPORT int test_instances(void) { return g_instances; }

/* Calls the target through the host of the last instance created. */
SMAD_PLUGIN_EXPORT int32_t test_target_call(const char* method, const char* params,
                                            smad_sink* result_json, smad_sink* error) {
  return g_host->target_call(g_host, method, params, 0, result_json, error);
}

static void* create_instance(void* user_data, const smad_host_v1* host) {
  g_host = host;
  ++g_instances;
  return &g_instances;
}

static void destroy_instance(void* instance) { --g_instances; }

static int32_t init(void* instance, const char* params_json, smad_sink* error) {
  record("init", NULL, 0, params_json);
  return result(error);
}

/* A CreateDeviceResponse{handle: "virtio_blk:test-full:0"}. */
static const char kHandle[] = "virtio_blk:test-full:0";

static int32_t create_device(void* instance, const uint8_t* request, size_t request_len,
                             smad_sink* response, smad_sink* error) {
  record("create_device", request, request_len, NULL);
  int32_t code = result(error);
  if (code != SMAD_STATUS_OK) return code;
  uint8_t message[2 + sizeof(kHandle)];
  message[0] = 0x0a;
  message[1] = (uint8_t)(sizeof(kHandle) - 1);
  memcpy(message + 2, kHandle, sizeof(kHandle) - 1);
  smad_sink_assign(response, message, 2 + sizeof(kHandle) - 1);
  return SMAD_STATUS_OK;
}

static int32_t delete_device(void* instance, const uint8_t* request, size_t request_len,
                             smad_sink* error) {
  record("delete_device", request, request_len, NULL);
  return result(error);
}

static void record_volume(const smad_volume_exposure* volume) {
  size_t id_len = strlen(volume->volume_id);
  if (id_len + strlen(volume->bdev_name) + 2 > sizeof(g_text)) return;
  strcpy(g_text, volume->volume_id);
  g_text[id_len] = ' ';
  strcpy(g_text + id_len + 1, volume->bdev_name);
  g_nsid_in = volume->nsid;
}

static int32_t attach_volume(void* instance, const uint8_t* request, size_t request_len,
                             smad_volume_exposure* volume, smad_sink* error) {
  record("attach_volume", request, request_len, NULL);
  record_volume(volume);
  if (g_next_nsid != 0) volume->nsid = g_next_nsid;
  g_next_nsid = 0;
  return result(error);
}

static int32_t detach_volume(void* instance, const uint8_t* request, size_t request_len,
                             const smad_volume_exposure* volume, smad_sink* error) {
  record("detach_volume", request, request_len, NULL);
  record_volume(volume);
  return result(error);
}

static int32_t owns_device(void* instance, const char* handle, size_t handle_len) {
  return handle_len > 11 && memcmp(handle, "virtio_blk:", 11) == 0;
}

static int32_t set_qos(void* instance, const uint8_t* request, size_t request_len,
                       smad_sink* error) {
  record("set_qos", request, request_len, NULL);
  return result(error);
}

static int32_t get_qos_capabilities(void* instance, const uint8_t* request, size_t request_len,
                                    smad_sink* response, smad_sink* error) {
  record("get_qos_capabilities", request, request_len, NULL);
  int32_t code = result(error);
  if (code != SMAD_STATUS_OK) return code;
  /* max_volume_caps (field 2) = {rw_iops (field 3): true} */
  static const uint8_t kResponse[] = {0x12, 0x02, 0x18, 0x01};
  smad_sink_assign(response, kResponse, sizeof(kResponse));
  return SMAD_STATUS_OK;
}

static void record_crypto(const char* method, const char* volume_id, const char* bdev,
                          const smad_crypto_params* params) {
  record(method, NULL, 0, NULL);
  /* "<volume_id> <bdev> <key> <key2|-> <cipher> <tweak_mode>", or "<volume_id> <bdev> none" */
  if (params == NULL) {
    snprintf(g_text, sizeof(g_text), "%s %s none", volume_id, bdev);
  } else {
    snprintf(g_text, sizeof(g_text), "%s %s %s %s %d %d", volume_id, bdev, params->key,
             params->key2_len > 0 ? params->key2 : "-", (int)params->cipher,
             (int)params->tweak_mode);
  }
}

static int32_t crypto_setup(void* instance, const char* volume_id, const char* volume_bdev,
                            const smad_crypto_params* params, smad_sink* crypto_bdev,
                            smad_sink* error) {
  record_crypto("setup", volume_id, volume_bdev, params);
  int32_t code = result(error);
  if (code == SMAD_STATUS_OK && params->key2_len == 0) smad_sink_assign_str(crypto_bdev, "crypto0");
  return code; /* with key2: crypto_bdev left empty (expose the volume's bdev) */
}

static int32_t crypto_verify(void* instance, const char* volume_id, const char* crypto_bdev,
                             const smad_crypto_params* params, smad_sink* error) {
  record_crypto("verify", volume_id, crypto_bdev, params);
  return result(error);
}

static int32_t crypto_cleanup(void* instance, const char* volume_id, const char* crypto_bdev,
                              smad_sink* error) {
  record_crypto("cleanup", volume_id, crypto_bdev, NULL);
  return result(error);
}

static int32_t register_plugin(const smad_registrar_v1* registrar, smad_sink* error) {
  smad_device_manager_v1 manager;
  memset(&manager, 0, sizeof(manager));
  manager.struct_size = sizeof(manager);
  manager.name = "test-full";
  manager.protocol = "virtio_blk";
  manager.allow_delete_volumes = 1;
  manager.create_instance = create_instance;
  manager.destroy_instance = destroy_instance;
  manager.init = init;
  manager.create_device = create_device;
  manager.delete_device = delete_device;
  manager.attach_volume = attach_volume;
  manager.detach_volume = detach_volume;
  manager.owns_device = owns_device;
  manager.set_qos = set_qos;
  manager.get_qos_capabilities = get_qos_capabilities;
  int32_t code = registrar->add_device_manager(registrar, &manager);
  if (code != SMAD_STATUS_OK) return code;

  smad_crypto_engine_v1 engine;
  memset(&engine, 0, sizeof(engine));
  engine.struct_size = sizeof(engine);
  engine.name = "test-crypto";
  engine.create_instance = create_instance;
  engine.destroy_instance = destroy_instance;
  engine.init = init;
  engine.setup = crypto_setup;
  engine.verify = crypto_verify;
  engine.cleanup = crypto_cleanup;
  return registrar->add_crypto_engine(registrar, &engine);
}

static const smad_plugin_v1 kPlugin = {SMAD_PLUGIN_ABI_VERSION, "test full", register_plugin};

SMAD_PLUGIN_EXPORT const smad_plugin_v1* smad_plugin_entry(uint32_t host_abi_version) {
  return &kPlugin;
}

#else
#error "define one TEST_PLUGIN_* kind"
#endif
