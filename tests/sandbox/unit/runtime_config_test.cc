// RuntimeConfig: built-in defaults, the JSON configuration file (every key, comments, errors that
// name the key) and validation. $VESSEL_GUEST_DIR points at a scratch directory with fake kernel
// and initramfs files so that validation can pass without a built guest.
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vessel/sandbox/config.h"

namespace vessel::sandbox {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

class RuntimeConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "vessel_runtime_config_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    kernel_ = dir_ + "/vmlinux";
    initramfs_ = dir_ + "/initramfs.cpio";
    WriteFile(kernel_, "\x7f" "ELF fake kernel");
    WriteFile(initramfs_, "070701 fake cpio");
    if (const char* old = std::getenv("VESSEL_GUEST_DIR")) saved_env_ = old;
    ASSERT_EQ(::setenv("VESSEL_GUEST_DIR", dir_.c_str(), 1), 0);
  }
  void TearDown() override {
    if (saved_env_) {
      ::setenv("VESSEL_GUEST_DIR", saved_env_->c_str(), 1);
    } else {
      ::unsetenv("VESSEL_GUEST_DIR");
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Expects InvalidArgument whose message names `key` (quoted, as the parser writes it).
  void ExpectBadKey(const std::string& json_text, const std::string& key, const std::string& what = "") {
    absl::StatusOr<RuntimeConfig> config = ParseRuntimeConfig(json_text);
    ASSERT_FALSE(config.ok()) << "accepted: " << json_text;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
    EXPECT_THAT(config.status().message(), HasSubstr(absl::StrCat("\"", key, "\""))) << json_text;
    if (!what.empty()) {
      EXPECT_THAT(config.status().message(), HasSubstr(what)) << json_text;
    }
  }

  std::string dir_;
  std::string kernel_;
  std::string initramfs_;
  std::optional<std::string> saved_env_;
};

TEST_F(RuntimeConfigTest, Defaults) {
  RuntimeConfig config = DefaultRuntimeConfig();
  EXPECT_EQ(config.kernel, kernel_);
  EXPECT_EQ(config.initramfs, initramfs_);
  EXPECT_EQ(config.vcpus, 1u);
  EXPECT_EQ(config.memory_mib, 512u);
  EXPECT_EQ(config.shared_fs_cache, "auto");
  EXPECT_FALSE(config.debug_console);
  EXPECT_EQ(config.boot_timeout, std::chrono::seconds(300));
  EXPECT_EQ(config.state_dir, "/run/vessel");
  EXPECT_EQ(config.kernel_cmdline, "");
  EXPECT_TRUE(config.seccomp);
  EXPECT_TRUE(ValidateRuntimeConfig(config).ok()) << ValidateRuntimeConfig(config);
}

TEST_F(RuntimeConfigTest, DefaultGuestDirWithoutEnvironment) {
  ASSERT_EQ(::unsetenv("VESSEL_GUEST_DIR"), 0);
  RuntimeConfig config = DefaultRuntimeConfig();
  EXPECT_THAT(config.kernel, EndsWith("/guest/vmlinux"));
  EXPECT_THAT(config.initramfs, EndsWith("/guest/initramfs.cpio"));
  EXPECT_THAT(config.kernel, Not(StartsWith(dir_)));
  // An empty value counts as unset.
  ASSERT_EQ(::setenv("VESSEL_GUEST_DIR", "", 1), 0);
  EXPECT_EQ(DefaultRuntimeConfig().kernel, config.kernel);
}

TEST_F(RuntimeConfigTest, EmptyObjectIsTheDefaults) {
  absl::StatusOr<RuntimeConfig> config = ParseRuntimeConfig("{}");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->kernel, kernel_);
  EXPECT_EQ(config->vcpus, 1u);
  EXPECT_EQ(config->memory_mib, 512u);
  EXPECT_EQ(config->boot_timeout, std::chrono::seconds(300));
}

TEST_F(RuntimeConfigTest, EveryKeyWithComments) {
  std::string other_kernel = dir_ + "/bzImage";
  std::string other_initramfs = dir_ + "/other.cpio";
  WriteFile(other_kernel, "MZ");
  WriteFile(other_initramfs, "070701");
  std::string text = absl::StrCat(R"(// vessel configuration
{
  "kernel": ")", other_kernel, R"(",  // a bzImage
  "initramfs": ")", other_initramfs, R"(",
  /* a block
     comment */
  "vcpus": 4,
  "memory_mib": 2048,
  "shared_fs_cache": "never",
  "debug_console": true,
  "boot_timeout_s": 45,
  "state_dir": "/var/lib/vessel-test",
  "kernel_cmdline": "quiet loglevel=3",
  "seccomp": false
})");
  absl::StatusOr<RuntimeConfig> config = ParseRuntimeConfig(text);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->kernel, other_kernel);
  EXPECT_EQ(config->initramfs, other_initramfs);
  EXPECT_EQ(config->vcpus, 4u);
  EXPECT_EQ(config->memory_mib, 2048u);
  EXPECT_EQ(config->shared_fs_cache, "never");
  EXPECT_TRUE(config->debug_console);
  EXPECT_EQ(config->boot_timeout, std::chrono::seconds(45));
  EXPECT_EQ(config->state_dir, "/var/lib/vessel-test");
  EXPECT_EQ(config->kernel_cmdline, "quiet loglevel=3");
  EXPECT_FALSE(config->seccomp);
}

TEST_F(RuntimeConfigTest, RangeBoundsAreInclusive) {
  absl::StatusOr<RuntimeConfig> low =
      ParseRuntimeConfig(R"({"vcpus": 1, "memory_mib": 64, "boot_timeout_s": 1, "shared_fs_cache": "always"})");
  ASSERT_TRUE(low.ok()) << low.status();
  EXPECT_EQ(low->memory_mib, 64u);
  EXPECT_EQ(low->shared_fs_cache, "always");
  absl::StatusOr<RuntimeConfig> high =
      ParseRuntimeConfig(R"({"vcpus": 64, "memory_mib": 1048576, "boot_timeout_s": 3600})");
  ASSERT_TRUE(high.ok()) << high.status();
  EXPECT_EQ(high->vcpus, 64u);
  EXPECT_EQ(high->boot_timeout, std::chrono::seconds(3600));
}

TEST_F(RuntimeConfigTest, SyntaxErrors) {
  for (const char* text : {"", "{", "{\"vcpus\": 2,}", "vcpus = 2", "{\"vcpus\": 2} trailing"}) {
    absl::StatusOr<RuntimeConfig> config = ParseRuntimeConfig(text);
    ASSERT_FALSE(config.ok()) << text;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(config.status().message(), HasSubstr("not valid JSON")) << text;
  }
  for (const char* text : {"[]", "4", "\"vcpus\"", "null"}) {
    absl::StatusOr<RuntimeConfig> config = ParseRuntimeConfig(text);
    ASSERT_FALSE(config.ok()) << text;
    EXPECT_THAT(config.status().message(), HasSubstr("must be an object")) << text;
  }
}

TEST_F(RuntimeConfigTest, UnknownKey) {
  ExpectBadKey(R"({"vcpu": 2})", "vcpu", "is not a known setting");
  ExpectBadKey(R"({"boot_timeout": 10})", "boot_timeout", "boot_timeout_s");
  ExpectBadKey(R"({"VCPUS": 2})", "VCPUS");
}

TEST_F(RuntimeConfigTest, WrongTypes) {
  ExpectBadKey(R"({"kernel": 1})", "kernel", "must be a string");
  ExpectBadKey(R"({"initramfs": null})", "initramfs", "must be a string");
  ExpectBadKey(R"({"vcpus": "2"})", "vcpus", "must be an integer");
  ExpectBadKey(R"({"vcpus": 2.0})", "vcpus", "must be an integer");
  ExpectBadKey(R"({"memory_mib": [512]})", "memory_mib", "must be an integer");
  ExpectBadKey(R"({"shared_fs_cache": true})", "shared_fs_cache", "must be a string");
  ExpectBadKey(R"({"debug_console": 1})", "debug_console", "must be true or false");
  ExpectBadKey(R"({"debug_console": "true"})", "debug_console", "must be true or false");
  ExpectBadKey(R"({"boot_timeout_s": "60"})", "boot_timeout_s", "must be an integer");
  ExpectBadKey(R"({"state_dir": {}})", "state_dir", "must be a string");
  ExpectBadKey(R"({"kernel_cmdline": ["quiet"]})", "kernel_cmdline", "must be a string");
  ExpectBadKey(R"({"seccomp": "off"})", "seccomp", "must be true or false");
}

TEST_F(RuntimeConfigTest, OutOfRange) {
  ExpectBadKey(R"({"vcpus": 0})", "vcpus", "from 1 to 64");
  ExpectBadKey(R"({"vcpus": 65})", "vcpus", "from 1 to 64");
  ExpectBadKey(R"({"vcpus": -1})", "vcpus", "from 1 to 64");
  ExpectBadKey(R"({"vcpus": 18446744073709551615})", "vcpus");
  ExpectBadKey(R"({"memory_mib": 63})", "memory_mib", "from 64 to 1048576");
  ExpectBadKey(R"({"memory_mib": 1048577})", "memory_mib");
  ExpectBadKey(R"({"boot_timeout_s": 0})", "boot_timeout_s", "from 1 to 3600");
  ExpectBadKey(R"({"boot_timeout_s": 3601})", "boot_timeout_s");
  ExpectBadKey(absl::StrCat(R"({"kernel_cmdline": ")", std::string(1025, 'x'), R"("})"), "kernel_cmdline",
               "longer than 1024");
}

TEST_F(RuntimeConfigTest, BadValues) {
  ExpectBadKey(R"({"shared_fs_cache": "sometimes"})", "shared_fs_cache", R"("never", "auto" or "always")");
  ExpectBadKey(R"({"shared_fs_cache": ""})", "shared_fs_cache");
  ExpectBadKey(R"({"shared_fs_cache": "AUTO"})", "shared_fs_cache");
  ExpectBadKey(R"({"state_dir": "run/vessel"})", "state_dir", "must be an absolute path");
  ExpectBadKey(R"({"state_dir": ""})", "state_dir", "must be an absolute path");
  // A NUL byte would cut the path short at every system call ("/\u0000x" is "/").
  ExpectBadKey(R"({"state_dir": "/\u0000/x"})", "state_dir", "NUL");
  ExpectBadKey(R"({"kernel": "/boot/vmlinux\u0000x"})", "kernel", "NUL");
}

TEST_F(RuntimeConfigTest, MissingGuestFiles) {
  absl::StatusOr<RuntimeConfig> config =
      ParseRuntimeConfig(absl::StrCat(R"({"kernel": ")", dir_, R"(/no-such-vmlinux"})"));
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr("kernel " + dir_ + "/no-such-vmlinux"));
  EXPECT_THAT(config.status().message(), HasSubstr("setup.sh"));

  config = ParseRuntimeConfig(absl::StrCat(R"({"initramfs": ")", dir_, R"("})"));  // a directory
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr("initramfs " + dir_));

  config = ParseRuntimeConfig(R"({"kernel": ""})");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("no kernel given"));

  // The defaults fail the same way when the guest directory is empty.
  ASSERT_EQ(::unlink(initramfs_.c_str()), 0);
  absl::Status status = ValidateRuntimeConfig(DefaultRuntimeConfig());
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr("initramfs " + initramfs_));
}

TEST_F(RuntimeConfigTest, ValidateChecksEveryField) {
  RuntimeConfig good = DefaultRuntimeConfig();
  ASSERT_TRUE(ValidateRuntimeConfig(good).ok());
  struct Case {
    std::function<void(RuntimeConfig&)> mutate;
    const char* key;
  } cases[] = {
      {[](RuntimeConfig& c) { c.vcpus = 0; }, "vcpus"},
      {[](RuntimeConfig& c) { c.vcpus = 65; }, "vcpus"},
      {[](RuntimeConfig& c) { c.memory_mib = 63; }, "memory_mib"},
      {[](RuntimeConfig& c) { c.memory_mib = (uint64_t{1} << 20) + 1; }, "memory_mib"},
      {[](RuntimeConfig& c) { c.shared_fs_cache = "yes"; }, "shared_fs_cache"},
      {[](RuntimeConfig& c) { c.boot_timeout = std::chrono::seconds(0); }, "boot_timeout_s"},
      {[](RuntimeConfig& c) { c.state_dir = "relative"; }, "state_dir"},
      {[](RuntimeConfig& c) { c.state_dir = std::string("/run\0/x", 7); }, "state_dir"},
      {[](RuntimeConfig& c) { c.kernel_cmdline = std::string(1025, 'x'); }, "kernel_cmdline"},
      {[](RuntimeConfig& c) { c.kernel_cmdline = std::string("quiet\0init=/bin/sh", 18); }, "kernel_cmdline"},
  };
  for (const Case& c : cases) {
    RuntimeConfig config = good;
    c.mutate(config);
    absl::Status status = ValidateRuntimeConfig(config);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.key << ": " << status;
    EXPECT_THAT(status.message(), HasSubstr(absl::StrCat("\"", c.key, "\""))) << status;
  }
}

TEST_F(RuntimeConfigTest, LoadFile) {
  std::string path = dir_ + "/vessel.json";
  WriteFile(path, "{\n  // two vCPUs\n  \"vcpus\": 2\n}\n");
  absl::StatusOr<RuntimeConfig> config = LoadRuntimeConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->vcpus, 2u);
  EXPECT_EQ(config->memory_mib, 512u);
  EXPECT_EQ(config->kernel, kernel_);
}

TEST_F(RuntimeConfigTest, LoadFileErrorsNameTheFile) {
  std::string path = dir_ + "/vessel.json";
  WriteFile(path, R"({"vcpus": 100})");
  absl::StatusOr<RuntimeConfig> config = LoadRuntimeConfig(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(config.status().message()), StartsWith(path + ": "));
  EXPECT_THAT(config.status().message(), HasSubstr("\"vcpus\""));
}

TEST_F(RuntimeConfigTest, LoadMissingFile) {
  std::string path = dir_ + "/does-not-exist.json";
  absl::StatusOr<RuntimeConfig> config = LoadRuntimeConfig(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr(path));
  EXPECT_THAT(config.status().message(), HasSubstr("No such file or directory"));
}

TEST_F(RuntimeConfigTest, LoadDirectoryIsNotAConfigFile) {
  absl::StatusOr<RuntimeConfig> config = LoadRuntimeConfig(dir_);
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr(dir_));
  EXPECT_THAT(config.status().message(), HasSubstr("is a directory"));
}

TEST_F(RuntimeConfigTest, LoadOversizedFile) {
  std::string path = dir_ + "/big.json";
  WriteFile(path, absl::StrCat("{\"kernel_cmdline\": \"", std::string((1 << 20) + 16, 'x'), "\"}"));
  absl::StatusOr<RuntimeConfig> config = LoadRuntimeConfig(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr("over 1 MiB"));
}

TEST_F(RuntimeConfigTest, LoadEndlessFileIsBounded) {
  // A character device that never ends must not be read into memory without bound.
  absl::StatusOr<RuntimeConfig> config = LoadRuntimeConfig("/dev/zero");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr("/dev/zero is over 1 MiB"));
}

}  // namespace
}  // namespace vessel::sandbox
