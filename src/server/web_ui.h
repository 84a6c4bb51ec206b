// web_ui.h: the web chat page of `moe serve` (GET / and GET /web/*). Its files (web/ in the source
// tree) are compiled into the binary by cmake/embed_web.cmake, so the page needs nothing installed
// and fetches nothing from the network. The page talks to the server only through the public Ollama
// API; it is served without an API key (it holds no data) and asks for the key when the API wants one.
// Every answer carries a Content-Security-Policy that allows only the page's own scripts and styles
// and requests to this server: a second line of defence behind the page's injection-proof markdown.
#pragma once
#include <httplib.h>

#include <cstddef>

namespace moe::server {

struct WebAsset {
  const char* path;          // "/web/app.js"
  const char* content_type;
  const unsigned char* data;
  size_t size;
};
extern const WebAsset kWebAssets[];  // generated (web_assets.cpp in the build folder)
extern const size_t kWebAssetCount;

inline constexpr const char* kWebCsp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

// GET / (web/index.html) and GET /web/<file>.
void register_web_ui(httplib::Server& http);

}  // namespace moe::server
