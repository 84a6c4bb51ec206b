// web_ui.cpp: serves the embedded web assets (see web_ui.h).
#include "server/web_ui.h"

#include <string_view>

namespace moe::server {

namespace {

const WebAsset* find_asset(std::string_view path) {
  for (size_t i = 0; i < kWebAssetCount; ++i)
    if (path == kWebAssets[i].path) return &kWebAssets[i];
  return nullptr;
}

void serve(const WebAsset& a, httplib::Response& res) {
  res.status = 200;
  res.set_header("Content-Security-Policy", kWebCsp);
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("Referrer-Policy", "no-referrer");
  res.set_header("Cache-Control", "no-cache");
  res.set_content(reinterpret_cast<const char*>(a.data), a.size, a.content_type);
}

}  // namespace

void register_web_ui(httplib::Server& http) {
  const WebAsset* index = find_asset("/web/index.html");
  if (index) {
    http.Get("/", [index](const httplib::Request&, httplib::Response& res) { serve(*index, res); });
  }
  for (size_t i = 0; i < kWebAssetCount; ++i) {
    const WebAsset* a = &kWebAssets[i];
    http.Get(a->path, [a](const httplib::Request&, httplib::Response& res) { serve(*a, res); });
  }
}

}  // namespace moe::server
