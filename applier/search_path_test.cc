#include "applier/search_path.h"

#include <gtest/gtest.h>

#include <optional>

namespace migledger {
namespace {

// A search_path value becomes a SET list of the same schemas, or "" where
// SET could name other schemas than the value does (case folding, quotes
// and backslashes in literals): the caller keeps set_config() then.
TEST(SearchPathSetListTest, CopiesTheValueOrDeclines) {
  EXPECT_EQ(SearchPathSetList("public"), "'public'");
  EXPECT_EQ(SearchPathSetList("app,public"), "'app', 'public'");
  EXPECT_EQ(SearchPathSetList(" app , public "), "'app', 'public'");
  EXPECT_EQ(SearchPathSetList("s_1$x,_t"), "'s_1$x', '_t'");
  EXPECT_EQ(SearchPathSetList("\"My Schema\", public"),
            "'My Schema', 'public'");
  EXPECT_EQ(SearchPathSetList("\"a\"\"b\""), "'a\"b'");
  EXPECT_EQ(SearchPathSetList("\"$user\",public"), "'$user', 'public'");
  // Declined: the server folds the case of unquoted names; literals with
  // quotes or backslashes; what does not parse.
  for (const char* value :
       {"Public", "app,Public", "caf\xc3\xa9", "1abc", "\"it's\"", "\"a\\b\"",
        "", "a,,b", "a,", ",a", "\"\"", "\"open", "a b", "a;drop", "a\v,b"}) {
    EXPECT_EQ(SearchPathSetList(value), "") << value;
  }
}

// "$user" goes, in every spelling the server reads as it; every other
// entry stays exactly as written, commas and blanks inside quotes included.
TEST(SearchPathWithoutUserTest, DropsOnlyUserEntries) {
  EXPECT_EQ(SearchPathWithoutUser("\"$user\", public"), "public");
  EXPECT_EQ(SearchPathWithoutUser("$user,public"), "public");
  EXPECT_EQ(SearchPathWithoutUser(" public , $USER "), "public");
  EXPECT_EQ(SearchPathWithoutUser("\"$user\""), "");
  EXPECT_EQ(SearchPathWithoutUser(""), "");
  EXPECT_EQ(SearchPathWithoutUser("\"app, schema\",\"$user\""),
            "\"app, schema\"");
  EXPECT_EQ(SearchPathWithoutUser("\"a,\"\"$user\"\"\", \"$user\", x"),
            "\"a,\"\"$user\"\"\", x");
  EXPECT_EQ(SearchPathWithoutUser("App, \"My Schema\""), "App, \"My Schema\"");
  // Quoted, the case counts: "$USER" names a schema of that name.
  EXPECT_EQ(SearchPathWithoutUser("\"$USER\", public"), "\"$USER\", public");
  for (const char* value : {"a,,b", "a,", ",a", "\"\"", "\"open", "a b"}) {
    EXPECT_EQ(SearchPathWithoutUser(value), std::nullopt) << value;
  }
}

}  // namespace
}  // namespace migledger
