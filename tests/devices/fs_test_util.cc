#include "tests/devices/fs_test_util.h"

#include <fstream>
#include <set>
#include <sstream>

namespace vessel::fs::testing {

void ScratchShare::WriteFile(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << content;
  ASSERT_TRUE(f.good()) << path;
}

std::string ScratchShare::ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string ScratchShare::Snapshot(const std::string& dir) {
  std::set<std::string> lines;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    std::string line = e.path().string();
    if (e.is_symlink()) {
      line += " -> " + std::filesystem::read_symlink(e.path()).string();
    } else if (e.is_regular_file()) {
      line += ":" + ReadFile(e.path().string());
    }
    lines.insert(line);
  }
  std::string out;
  for (const std::string& l : lines) out += l + "\n";
  return out;
}

}  // namespace vessel::fs::testing
