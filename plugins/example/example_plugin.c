/*
 * An example smad plugin (src/agent/plugin/plugin_abi.h), reproducing SPDK's SMA test plugins
 * (test/sma/plugins/plugin{1,2}). Built twice, with SMAD_EXAMPLE_PLUGIN_NUMBER 1 and 2:
 *
 *  - device managers "plugin<N>-device1" (protocol nvme) and "plugin<N>-device2" (protocol
 * nvmf_tcp); they only implement create_device, which returns the handle
 *    "<protocol>:<manager name>:<active crypto engine name>", and owns_device, true for handles
 * starting with "<protocol>:<manager name>:";
 *  - crypto engine "crypto-plugin<N>": setup refuses an empty key (INVALID_ARGUMENT), checks
 * through the target that the volume's bdev exists (bdev_get_bdevs) and exposes the volume itself
 * (it does not encrypt: test use only); verify and cleanup succeed.
 *
 * Written in C with a few lines of protobuf wire-format code, to show that a plugin needs neither
 * C++ nor a protobuf library (and so cannot clash with the descriptors smad already holds).
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/plugin/plugin_abi.h"

#ifndef SMAD_EXAMPLE_PLUGIN_NUMBER
#error "define SMAD_EXAMPLE_PLUGIN_NUMBER (1 or 2)"
#endif

#define STRINGIFY_INNER(x) #x
#define STRINGIFY(x) STRINGIFY_INNER(x)
#define PLUGIN_NAME "plugin" STRINGIFY(SMAD_EXAMPLE_PLUGIN_NUMBER)

/* ---- a growable buffer and a sink writing into it -------------------------------------------- */

typedef struct buffer {
  char* data; /* NUL-terminated when not NULL */
  size_t len;
} buffer;

static void buffer_assign(void* opaque, const void* data, size_t len) {
  buffer* buf = (buffer*)opaque;
  char* grown = (char*)realloc(buf->data, len + 1);
  if (grown == NULL) abort(); /* the ABI says sinks do not fail */
  if (len > 0) memcpy(grown, data, len);
  grown[len] = '\0';
  buf->data = grown;
  buf->len = len;
}

static smad_sink buffer_sink(buffer* buf) {
  smad_sink sink = {buf, buffer_assign};
  return sink;
}

static void buffer_free(buffer* buf) {
  free(buf->data);
  buf->data = NULL;
  buf->len = 0;
}

/* ---- protobuf wire format: just what this plugin needs --------------------------------------- */

/* Reads a varint at *pos; 0 on malformed input. */
static int read_varint(const uint8_t* data, size_t len, size_t* pos, uint64_t* value) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64 && *pos < len; shift += 7) {
    uint8_t byte = data[(*pos)++];
    result |= (uint64_t)(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *value = result;
      return 1;
    }
  }
  return 0;
}

/* Whether a message holds top-level field `field` (any wire type); -1 when malformed. */
static int has_field(const uint8_t* data, size_t len, uint32_t field) {
  size_t pos = 0;
  while (pos < len) {
    uint64_t key;
    uint64_t value;
    if (!read_varint(data, len, &pos, &key)) return -1;
    if ((key >> 3) == field) return 1;
    switch (key & 7) {
      case 0: /* varint */
        if (!read_varint(data, len, &pos, &value)) return -1;
        break;
      case 1: /* fixed64 */
        if (len - pos < 8) return -1;
        pos += 8;
        break;
      case 2: /* length-delimited */
        if (!read_varint(data, len, &pos, &value) || value > len - pos) return -1;
        pos += (size_t)value;
        break;
      case 5: /* fixed32 */
        if (len - pos < 4) return -1;
        pos += 4;
        break;
      default:
        return -1;
    }
  }
  return 0;
}

/* Encodes a message with one string field `field` into `out` (a CreateDeviceResponse: field 1). */
static void write_string_message(smad_sink* out, uint32_t field, const char* text, size_t len) {
  uint8_t header[16];
  size_t n = 0;
  uint64_t key = ((uint64_t)field << 3) | 2;
  do {
    header[n++] = (uint8_t)((key & 0x7f) | (key > 0x7f ? 0x80 : 0));
    key >>= 7;
  } while (key != 0);
  uint64_t size = len;
  do {
    header[n++] = (uint8_t)((size & 0x7f) | (size > 0x7f ? 0x80 : 0));
    size >>= 7;
  } while (size != 0);
  uint8_t* message = (uint8_t*)malloc(n + len);
  if (message == NULL) abort();
  memcpy(message, header, n);
  memcpy(message + n, text, len);
  smad_sink_assign(out, message, n + len);
  free(message);
}

/* ---- device managers ------------------------------------------------------------------------- */

typedef struct manager_config {
  const char* name;
  const char* protocol;
  uint32_t params_field; /* the CreateDeviceRequest oneof member's field number */
} manager_config;

static const manager_config kDevice1 = {PLUGIN_NAME "-device1", "nvme", 2};
static const manager_config kDevice2 = {PLUGIN_NAME "-device2", "nvmf_tcp", 4};

typedef struct manager {
  const manager_config* config;
  const smad_host_v1* host;
} manager;

static void* manager_create(void* user_data, const smad_host_v1* host) {
  manager* m = (manager*)malloc(sizeof(manager));
  if (m == NULL) return NULL;
  m->config = (const manager_config*)user_data;
  m->host = host;
  return m;
}

static void manager_destroy(void* instance) { free(instance); }

/* "<protocol>:<name>:" */
static char* handle_prefix(const manager_config* config) {
  size_t len = strlen(config->protocol) + strlen(config->name) + 3;
  char* prefix = (char*)malloc(len);
  if (prefix != NULL) snprintf(prefix, len, "%s:%s:", config->protocol, config->name);
  return prefix;
}

static int32_t manager_create_device(void* instance, const uint8_t* request, size_t request_len,
                                     smad_sink* response, smad_sink* error) {
  const manager* m = (const manager*)instance;
  if (has_field(request, request_len, m->config->params_field) != 1) {
    smad_sink_assign_str(error, "Unsupported device type");
    return SMAD_STATUS_INVALID_ARGUMENT;
  }
  buffer engine = {NULL, 0};
  smad_sink engine_sink = buffer_sink(&engine);
  m->host->active_crypto_engine(m->host, &engine_sink);
  char* prefix = handle_prefix(m->config);
  if (prefix == NULL) {
    buffer_free(&engine);
    smad_sink_assign_str(error, "out of memory");
    return SMAD_STATUS_INTERNAL;
  }
  size_t prefix_len = strlen(prefix);
  size_t handle_len = prefix_len + engine.len;
  char* handle = (char*)malloc(handle_len + 1);
  if (handle == NULL) abort();
  memcpy(handle, prefix, prefix_len);
  if (engine.len > 0) memcpy(handle + prefix_len, engine.data, engine.len);
  handle[handle_len] = '\0';
  write_string_message(response, 1, handle, handle_len);
  free(handle);
  free(prefix);
  buffer_free(&engine);
  return SMAD_STATUS_OK;
}

static int32_t manager_owns_device(void* instance, const char* handle, size_t handle_len) {
  const manager* m = (const manager*)instance;
  char* prefix = handle_prefix(m->config);
  if (prefix == NULL) return 0;
  size_t prefix_len = strlen(prefix);
  int owned = handle_len >= prefix_len && memcmp(handle, prefix, prefix_len) == 0;
  free(prefix);
  return owned;
}

static int32_t add_manager(const smad_registrar_v1* registrar, const manager_config* config) {
  smad_device_manager_v1 descriptor;
  memset(&descriptor, 0, sizeof(descriptor));
  descriptor.struct_size = sizeof(descriptor);
  descriptor.name = config->name;
  descriptor.protocol = config->protocol;
  descriptor.allow_delete_volumes = 0;
  descriptor.user_data = (void*)config;
  descriptor.create_instance = manager_create;
  descriptor.destroy_instance = manager_destroy;
  descriptor.create_device = manager_create_device;
  descriptor.owns_device = manager_owns_device;
  /* delete/attach/detach/set_qos/get_qos_capabilities: not implemented, as in SPDK's test plugins.
   */
  return registrar->add_device_manager(registrar, &descriptor);
}

/* ---- crypto engine --------------------------------------------------------------------------- */

static void* engine_create(void* user_data, const smad_host_v1* host) { return (void*)host; }

/* Appends `text` to `out` as a JSON string literal; `out` must hold 6 * strlen(text) + 3 bytes. */
static void json_quote(char* out, const char* text) {
  *out++ = '"';
  for (const unsigned char* c = (const unsigned char*)text; *c != '\0'; ++c) {
    if (*c == '"' || *c == '\\') {
      *out++ = '\\';
      *out++ = (char)*c;
    } else if (*c < 0x20) {
      out += sprintf(out, "\\u%04x", *c);
    } else {
      *out++ = (char)*c;
    }
  }
  *out++ = '"';
  *out = '\0';
}

static int32_t engine_setup(void* instance, const char* volume_id, const char* volume_bdev,
                            const smad_crypto_params* params, smad_sink* crypto_bdev,
                            smad_sink* error) {
  const smad_host_v1* host = (const smad_host_v1*)instance;
  if (params->key_len == 0) {
    smad_sink_assign_str(error, "Invalid volume crypto configuration: missing key");
    return SMAD_STATUS_INVALID_ARGUMENT;
  }
  /* {"name": <bdev>} */
  char* request = (char*)malloc(6 * strlen(volume_bdev) + 16);
  if (request == NULL) abort();
  strcpy(request, "{\"name\":");
  json_quote(request + strlen(request), volume_bdev);
  strcat(request, "}");
  buffer message = {NULL, 0};
  smad_sink message_sink = buffer_sink(&message);
  int32_t code = host->target_call(host, "bdev_get_bdevs", request, 0, NULL, &message_sink);
  free(request);
  if (code != SMAD_STATUS_OK) {
    smad_sink_assign(error, message.data, message.len);
    buffer_free(&message);
    return code;
  }
  buffer_free(&message);
  /* Test-only: no encryption, the volume itself is exposed. */
  smad_sink_assign_str(crypto_bdev, volume_bdev);
  return SMAD_STATUS_OK;
}

static int32_t engine_verify(void* instance, const char* volume_id, const char* crypto_bdev,
                             const smad_crypto_params* params, smad_sink* error) {
  return SMAD_STATUS_OK;
}

static int32_t engine_cleanup(void* instance, const char* volume_id, const char* crypto_bdev,
                              smad_sink* error) {
  return SMAD_STATUS_OK;
}

/* ---- entry point ----------------------------------------------------------------------------- */

static int32_t register_plugin(const smad_registrar_v1* registrar, smad_sink* error) {
  int32_t code = add_manager(registrar, &kDevice1);
  if (code == SMAD_STATUS_OK) code = add_manager(registrar, &kDevice2);
  if (code == SMAD_STATUS_OK) {
    smad_crypto_engine_v1 engine;
    memset(&engine, 0, sizeof(engine));
    engine.struct_size = sizeof(engine);
    engine.name = "crypto-" PLUGIN_NAME;
    engine.create_instance = engine_create;
    engine.setup = engine_setup;
    engine.verify = engine_verify;
    engine.cleanup = engine_cleanup;
    code = registrar->add_crypto_engine(registrar, &engine);
  }
  if (code != SMAD_STATUS_OK) smad_sink_assign_str(error, "registration refused");
  return code;
}

static const smad_plugin_v1 kPlugin = {SMAD_PLUGIN_ABI_VERSION, "example " PLUGIN_NAME,
                                       register_plugin};

SMAD_PLUGIN_EXPORT const smad_plugin_v1* smad_plugin_entry(uint32_t host_abi_version) {
  (void)host_abi_version; /* smad checks kPlugin.abi_version */
  return &kPlugin;
}
