// CCurl: libcurl for Swift. curl_easy_setopt, curl_multi_setopt and curl_easy_getinfo are C variadics,
// which Swift cannot call; these one-line typed wrappers (long / pointer / function / curl_off_t) are the
// whole shim. Everything else in <curl/curl.h> imports directly.
//
// Order matters, as in CUring: the glibc headers come before <curl/curl.h> (fd_set module conflict).
#ifndef CCURL_H
#define CCURL_H

#include <sys/socket.h>
#include <sys/select.h>
#include <sys/types.h>
#include <curl/curl.h>

CURLcode CCurl_easy_setopt_long(CURL *handle, CURLoption option, long value);
CURLcode CCurl_easy_setopt_ptr(CURL *handle, CURLoption option, const void *value);
CURLcode CCurl_easy_setopt_off_t(CURL *handle, CURLoption option, curl_off_t value);

CURLMcode CCurl_multi_setopt_ptr(CURLM *multi, CURLMoption option, void *value);

CURLcode CCurl_easy_getinfo_long(CURL *handle, CURLINFO info, long *value);
CURLcode CCurl_easy_getinfo_ptr(CURL *handle, CURLINFO info, char **value);
CURLcode CCurl_easy_getinfo_double(CURL *handle, CURLINFO info, double *value);

// Typed setters for the callbacks ringsip installs, so Swift passes its @convention(c) closures unchanged.
typedef size_t (*CCurl_write_callback)(char *data, size_t size, size_t count, void *context);
typedef int (*CCurl_socket_callback)(CURL *easy, curl_socket_t fd, int what, void *context, void *socketContext);
typedef int (*CCurl_timer_callback)(CURLM *multi, long timeoutMilliseconds, void *context);

CURLcode CCurl_easy_setopt_write_function(CURL *handle, CCurl_write_callback callback);
CURLMcode CCurl_multi_setopt_socket_function(CURLM *multi, CCurl_socket_callback callback);
CURLMcode CCurl_multi_setopt_timer_function(CURLM *multi, CCurl_timer_callback callback);

#endif
