# Every target links certfs_settings: warnings, assertions and sanitizers in one place.
add_library(certfs_settings INTERFACE)
target_compile_options(certfs_settings INTERFACE -Wall -Wextra -Wpedantic -Wshadow)
target_compile_definitions(certfs_settings INTERFACE _GLIBCXX_ASSERTIONS)
# GCC 12 at -O3 (Release) warns that std::string's `"literal" + std::string&&` may overlap in a
# memcpy (char_traits.h:431, "accessing 9223372036854775810 or more bytes"): a known false
# positive of its -Wrestrict, which it gives for ordinary string building all over the tree.
# Only there: at -O2 (the developer build) and with other compilers the warning stays on.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_GREATER_EQUAL 12
   AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  target_compile_options(certfs_settings INTERFACE $<$<CONFIG:Release>:-Wno-restrict>)
endif()
if(CERTFS_DEV)
  target_compile_options(certfs_settings INTERFACE -Werror)
endif()
# The tests relax what a sanitizer changes by itself (memory bounds: ASan's quarantine).
if(CERTFS_SANITIZE OR CERTFS_TSAN)
  target_compile_definitions(certfs_settings INTERFACE CERTFS_SANITIZED=1)
endif()
if(CERTFS_SANITIZE)
  target_compile_options(certfs_settings INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer)
  target_link_options(certfs_settings INTERFACE -fsanitize=address,undefined)
endif()
if(CERTFS_TSAN)
  target_compile_options(certfs_settings INTERFACE -fsanitize=thread -fno-omit-frame-pointer)
  target_link_options(certfs_settings INTERFACE -fsanitize=thread)
endif()
# Fuzzing: every library gets libFuzzer's coverage instrumentation and the sanitizers, so that
# the fuzzers (fuzz/CMakeLists.txt, which add libFuzzer's main) see into them. UB aborts, so that
# libFuzzer records it as a crash instead of printing it and carrying on.
if(CERTFS_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "CERTFS_FUZZ needs clang's libFuzzer: CXX=clang++ (scripts/fuzz.sh configures it)")
  endif()
  target_compile_options(certfs_settings INTERFACE -fsanitize=fuzzer-no-link,address,undefined
                                                   -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  target_link_options(certfs_settings INTERFACE -fsanitize=address,undefined)
endif()
