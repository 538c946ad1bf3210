/* Stands in for <curl/curlver.h> of libcurl 7.81 (Ubuntu 22.04; RHEL 9 has 7.76), for `make
 * compilers`: included first, it makes the core take the branches written for a libcurl older
 * than the headers installed (curl.h skips its own curlver.h, whose guard this defines). Older
 * libcurls do not mark the options that later ones deprecate. */
#define CURLINC_CURLVER_H
#define LIBCURL_COPYRIGHT "Daniel Stenberg, <daniel@haxx.se>."
#define LIBCURL_VERSION "7.81.0"
#define LIBCURL_VERSION_MAJOR 7
#define LIBCURL_VERSION_MINOR 81
#define LIBCURL_VERSION_PATCH 0
#define LIBCURL_VERSION_NUM 0x075100
#define LIBCURL_TIMESTAMP "2022-01-05"
#define CURL_VERSION_BITS(x, y, z) ((x) << 16 | (y) << 8 | (z))
#define CURL_AT_LEAST_VERSION(x, y, z) (LIBCURL_VERSION_NUM >= CURL_VERSION_BITS(x, y, z))
#define CURL_DISABLE_DEPRECATION
