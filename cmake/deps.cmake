# Third-party dependencies; every one comes from a Debian 12 package (see scripts/setup).
find_package(Threads REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
find_package(spdlog CONFIG REQUIRED)
find_package(fmt CONFIG REQUIRED)
find_package(GTest CONFIG REQUIRED)
find_package(benchmark CONFIG REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(URING REQUIRED IMPORTED_TARGET liburing)
find_library(AIO_LIBRARY aio REQUIRED)
find_path(AIO_INCLUDE_DIR libaio.h REQUIRED)

# smad (the agent): gRPC + protobuf for the SMA API, SQLite for the state store, yaml-cpp for the config.
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(SQLite3 REQUIRED)
find_package(yaml-cpp CONFIG REQUIRED)
if(SMAD_STATIC_DEPS)
  set(OPENSSL_USE_STATIC_LIBS TRUE)
endif()
find_package(OpenSSL REQUIRED)

# SMAD_STATIC_DEPS: link the libraries Debian also ships as archives (gRPC, protobuf, Abseil, OpenSSL,
# SQLite, yaml-cpp, zlib, c-ares, ...) statically. An idle smad then maps a few MB of code it uses instead
# of ~60 shared libraries, each with its symbol tables and relocations resident (20 MB -> 15 MB RSS;
# docs/benchmarks.md). spdlog and fmt have no archive in Debian and stay shared. Plugins are C modules
# that link none of these, so they cannot end up with a second copy.
if(SMAD_STATIC_DEPS)
  get_directory_property(smad_imported_targets IMPORTED_TARGETS)
  foreach(target IN LISTS smad_imported_targets)
    get_target_property(type ${target} TYPE)
    if(NOT type MATCHES "^(SHARED|UNKNOWN)_LIBRARY$")
      continue()
    endif()
    foreach(property IMPORTED_LOCATION IMPORTED_LOCATION_NONE IMPORTED_LOCATION_RELEASE
                     IMPORTED_LOCATION_RELWITHDEBINFO IMPORTED_LOCATION_NOCONFIG)
      get_target_property(location ${target} ${property})
      if(location AND location MATCHES "^(.*/lib[^/]+)\\.so(\\.[0-9.]+)?$")
        if(EXISTS "${CMAKE_MATCH_1}.a")
          set_target_properties(${target} PROPERTIES ${property} "${CMAKE_MATCH_1}.a")
        endif()
      endif()
    endforeach()
  endforeach()
endif()
