// NetConfig: MAC parsing / formatting / random MACs, and config validation.
#include "devices/net/net_config.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vessel::net {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParseMacTest, AcceptsColonAndDashInEitherCase) {
  absl::StatusOr<MacAddress> mac = ParseMac("52:54:00:ab:CD:ef");
  ASSERT_TRUE(mac.ok()) << mac.status();
  EXPECT_THAT(*mac, ElementsAre(0x52, 0x54, 0x00, 0xab, 0xcd, 0xef));
  mac = ParseMac("02-00-00-00-00-01");
  ASSERT_TRUE(mac.ok()) << mac.status();
  EXPECT_THAT(*mac, ElementsAre(0x02, 0, 0, 0, 0, 0x01));
}

TEST(ParseMacTest, RejectsEverythingElseAndQuotesTheInput) {
  for (const char* bad :
       {"", "52:54:00:12:34", "52:54:00:12:34:56:78", "52:54:00:12:34:5", "52:54:00:12:34:5g",
        "52-54:00:12:34:56", "52.54.00.12.34.56", "5254.0012.3456", " 52:54:00:12:34:56",
        "52:54:00:12:34:56 ", "525:4:00:12:34:56", "+2:54:00:12:34:56"}) {
    absl::StatusOr<MacAddress> mac = ParseMac(bad);
    EXPECT_FALSE(mac.ok()) << "'" << bad << "'";
    EXPECT_EQ(mac.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(mac.status().message(), HasSubstr(absl::StrCat("'", bad, "'")));
  }
}

TEST(ParseMacTest, FormatRoundTrips) {
  const MacAddress mac = {0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f};
  EXPECT_EQ(FormatMac(mac), "52:54:00:ab:cd:0f");
  EXPECT_EQ(ParseMac(FormatMac(mac)).value(), mac);
}

TEST(RandomMacTest, IsLocallyAdministeredUnicastAndVaries) {
  const MacAddress a = RandomMac();
  const MacAddress b = RandomMac();
  EXPECT_EQ(a[0] & 0x03, 0x02);
  EXPECT_EQ(b[0] & 0x03, 0x02);
  EXPECT_NE(a, b);  // 46 random bits
  EXPECT_TRUE(ValidateNetConfig({"tap0", a, ""}).ok());
}

TEST(ValidateNetConfigTest, TapNameRules) {
  EXPECT_TRUE(ValidateNetConfig({"tap0", std::nullopt, ""}).ok());
  EXPECT_TRUE(ValidateNetConfig({"abcdefghijklmno", std::nullopt, ""}).ok());  // 15 bytes
  EXPECT_THAT(ValidateNetConfig({"", std::nullopt, ""}).message(), HasSubstr("no tap name"));
  EXPECT_THAT(ValidateNetConfig({"abcdefghijklmnop", std::nullopt, ""}).message(),
              HasSubstr("at most 15"));
  for (const char* bad : {"a/b", "a b", "a:b", "a\tb", ".", ".."}) {
    EXPECT_EQ(ValidateNetConfig({bad, std::nullopt, ""}).code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(ValidateNetConfigTest, MacMustBeNonZeroUnicast) {
  EXPECT_THAT(ValidateNetConfig({"tap0", MacAddress{0x01, 0, 0x5e, 0, 0, 1}, ""}).message(),
              HasSubstr("multicast"));
  EXPECT_THAT(ValidateNetConfig({"tap0", MacAddress{}, ""}).message(),
              HasSubstr("00:00:00:00:00:00"));
  EXPECT_TRUE(ValidateNetConfig({"tap0", MacAddress{0x52, 0x54, 0, 1, 2, 3}, ""}).ok());
}

}  // namespace
}  // namespace vessel::net
