/*
 * RINGVM_ASAN: defined when AddressSanitizer instruments this translation
 * unit. gcc says so with __SANITIZE_ADDRESS__; clang 14 (the fuzz build)
 * only through __has_feature, and without this the coroutine switches
 * would run unannotated and ASan would report false stack errors.
 */
#ifndef RINGVM_ASYNC_ASAN_H
#define RINGVM_ASYNC_ASAN_H

#if defined(__SANITIZE_ADDRESS__)
#define RINGVM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RINGVM_ASAN 1
#endif
#endif

#endif
