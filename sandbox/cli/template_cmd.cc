#include "sandbox/cli/template_cmd.h"

#include <ctime>
#include <iostream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "vessel/sandbox/config.h"
#include "vessel/sandbox/template.h"
#include "vmm/base/log.h"

namespace vessel::sandbox {
namespace {

void Usage(std::ostream& out) {
  out << "usage: vessel template build [--config FILE] [--cpus N] [--memory MiB] [--network] [--if-missing]\n"
         "       vessel template ls [--config FILE]\n"
         "       vessel template rm [--config FILE] KEY-PREFIX|all\n"
         "A template is the default guest booted until its agent answers, paused and saved under\n"
         "the template directory (default /var/cache/vessel/templates for root). `vessel run` and the SDK restore\n"
         "sandboxes from the template that matches their kernel, initramfs, vCPUs and memory.\n"
         "--network builds the shape with a network device, for sandboxes with a pod network.\n";
}

std::string When(int64_t unix_seconds) {
  char buf[32];
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm;
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

}  // namespace

int TemplateMain(int argc, char** argv) {
  if (argc < 3 || std::string(argv[2]) == "-h" || std::string(argv[2]) == "--help") {
    Usage(argc < 3 ? std::cerr : std::cout);
    return argc < 3 ? 2 : 0;
  }
  const std::string verb = argv[2];
  std::string config_path;
  std::optional<uint32_t> cpus;
  std::optional<uint64_t> memory;
  std::vector<std::string> rest;
  bool verbose = false;
  bool if_missing = false;
  bool network = false;
  for (int i = 3; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::optional<std::string> {
      if (i + 1 >= argc) return std::nullopt;
      return std::string(argv[++i]);
    };
    if (a == "--config") {
      auto v = value();
      if (!v) return (std::cerr << "vessel template: --config needs a file\n", 2);
      config_path = *v;
    } else if (a == "--cpus") {
      auto v = value();
      uint32_t n;
      if (!v || !absl::SimpleAtoi(*v, &n) || n < 1 || n > 64) {
        return (std::cerr << "vessel template: --cpus must be a number from 1 to 64\n", 2);
      }
      cpus = n;
    } else if (a == "--memory") {
      auto v = value();
      uint64_t n;
      if (!v || !absl::SimpleAtoi(*v, &n) || n < 64) {
        return (std::cerr << "vessel template: --memory must be a number of MiB, at least 64\n", 2);
      }
      memory = n;
    } else if (a == "--network") {
      network = true;
    } else if (a == "--if-missing") {
      if_missing = true;
    } else if (a == "-v" || a == "--verbose") {
      verbose = true;
    } else if (!a.empty() && a[0] == '-') {
      std::cerr << "vessel template: unknown option " << a << "\n";
      Usage(std::cerr);
      return 2;
    } else {
      rest.push_back(a);
    }
  }
  SetMinLogLevel(verbose || verb == "build" ? LogLevel::kInfo : LogLevel::kWarning);
  absl::StatusOr<RuntimeConfig> rt = config_path.empty() ? absl::StatusOr<RuntimeConfig>(DefaultRuntimeConfig())
                                                         : LoadRuntimeConfig(config_path);
  if (!rt.ok()) {
    std::cerr << "vessel template: " << rt.status().message() << "\n";
    return 1;
  }
  if (cpus) rt->vcpus = *cpus;
  if (memory) rt->memory_mib = *memory;

  if (verb == "build") {
    if (!rest.empty()) return (std::cerr << "vessel template build: takes no arguments\n", 2);
    if (if_missing) {
      absl::StatusOr<std::vector<TemplateInfo>> all = ListTemplates(*rt);
      if (all.ok()) {
        for (const TemplateInfo& t : *all) {
          if (t.current && t.network == network) {
            std::cerr << "vessel template build: template " << t.key.substr(0, 12)
                      << " already matches this configuration (" << t.dir << ")\n";
            std::cout << t.key << "\t" << t.dir << "\n";
            return 0;
          }
        }
      }
    }
    absl::StatusOr<TemplateInfo> t = BuildTemplate(*rt, network);
    if (!t.ok()) {
      std::cerr << "vessel template build: " << t.status().message() << "\n";
      return 1;
    }
    std::cout << t->key << "\t" << t->dir << "\n";
    return 0;
  }
  if (verb == "ls") {
    if (!rest.empty()) return (std::cerr << "vessel template ls: takes no arguments\n", 2);
    absl::StatusOr<std::vector<TemplateInfo>> all = ListTemplates(*rt);
    if (!all.ok()) {
      std::cerr << "vessel template ls: " << all.status().message() << "\n";
      return 1;
    }
    std::cout << absl::StrFormat("%-14s %-5s %-9s %-7s %-10s %-20s %s\n", "KEY", "VCPUS", "MEMORY", "NETWORK",
                                 "ON DISK", "CREATED", "USED BY THIS CONFIG");
    for (const TemplateInfo& t : *all) {
      std::cout << absl::StrFormat("%-14s %-5d %-9s %-7s %-10s %-20s %s\n", t.key.substr(0, 12), t.vcpus,
                                   absl::StrCat(t.memory_mib, " MiB"), t.network ? "yes" : "no",
                                   absl::StrCat(t.disk_bytes >> 20, " MiB"),
                                   When(t.created_unix), t.current ? "yes" : "no (other inputs)");
    }
    if (all->empty()) std::cerr << "no templates under " << TemplateRoot(*rt) << " (vessel template build)\n";
    return 0;
  }
  if (verb == "rm") {
    if (rest.size() != 1) return (std::cerr << "vessel template rm: give one KEY-PREFIX or all\n", 2);
    absl::Status s = RemoveTemplate(*rt, rest[0]);
    if (!s.ok()) {
      std::cerr << "vessel template rm: " << s.message() << "\n";
      return 1;
    }
    return 0;
  }
  std::cerr << "vessel template: unknown command \"" << verb << "\"\n";
  Usage(std::cerr);
  return 2;
}

}  // namespace vessel::sandbox
