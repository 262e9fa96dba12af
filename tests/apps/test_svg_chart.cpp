// The inspect report's SVG chart kit (apps/inspect/svg_chart.h): 1-2-5 ticks, escaping, pixel positions
// checked by hand, and a rendered chart that is well-formed with the expected number of each element.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "apps/inspect/svg_chart.h"
#include "markup_check.h"

using namespace apps::svg;

namespace {

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

using markuptest::check_balanced;

void check_ticks(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-12));
}

}  // namespace

TEST_CASE("svg kit: ticks at 1, 2 or 5 times a power of ten, escaping, numbers") {
  check_ticks(nice_ticks(0, 10, 5), {0, 2, 4, 6, 8, 10});        // raw step 2
  check_ticks(nice_ticks(0, 1, 4), {0, 0.5, 1});                  // raw 0.25 -> 0.5
  check_ticks(nice_ticks(0.13, 0.87, 5), {0.2, 0.4, 0.6, 0.8});   // raw 0.148 -> 0.2, from ceil(0.65)
  check_ticks(nice_ticks(-1.05, 1.05, 4), {-1, 0, 1});            // raw 0.525 -> 1
  check_ticks(nice_ticks(3, 3, 5), {3});                          // an empty range
  CHECK(nice_ticks(-0.7, 0.7, 7)[3] == 0.0);  // -0.6 + 3 x 0.2 is -1.1e-16 in floating point: printed as 0
  CHECK(esc("a<b & \"c\">") == "a&lt;b &amp; &quot;c&quot;&gt;");
  CHECK(num(NAN) == "-");
  CHECK(num(INFINITY) == "-");
  CHECK(num(0.5, "%.2f") == "0.50");
  CHECK(num(1234567.0) == "1.235e+06");
  CHECK(px(12.345) == "12.3");
}

TEST_CASE("svg kit: a chart renders well-formed, with one path per series and points where computed") {
  Chart c;
  c.title = "t <1>";
  c.xlabel = "epoch";
  c.ylabel = "y";
  c.xmin = 0, c.xmax = 10, c.ymin = 0, c.ymax = 10;
  Series a{"a", "#111111"}, b{"b & c", "#222222"};
  a.pts = {{5, 5}, {6, NAN}, {7, 2}, {8, 3}};  // the NaN breaks a's line in two
  b.pts = {{0, 0}, {10, 10}};
  b.markers = false;
  c.series = {a, b};
  c.vlines = {{4, "clip", "#c81e1e"}, {6, "clip", "#c81e1e"}, {2, "", "#888888"}};
  c.bands = {{-0.5, 4.5, "FP32"}, {4.5, 10.5, "W4A4"}};
  const std::string s = render(c, "clip7");

  CHECK(s.rfind("<svg class=\"chart\" width=\"620\" height=\"280\"", 0) == 0);
  CHECK(check_balanced(s) > 10);
  CHECK(count(s, "<svg") == 1);
  CHECK(count(s, "<path") == 2);
  CHECK(count(s, "<circle") == 3);  // a's three finite points; b has no markers
  CHECK(count(s, "<line") == 3 + 6 + 6);  // marker lines, y grid 0..10 by 2, x grid 0..10 by 2
  CHECK(count(s, "id=\"clip7\"") == 1);
  CHECK(count(s, "url(#clip7)") == 1);
  // Plot area: left margin 62, right 16, top 56, bottom 44 -> 542 x 180 pixels. (5, 5) is its centre:
  // x = 62 + 0.5 * 542 = 333, y = 56 + 0.5 * 180 = 146. (7, 2): x = 62 + 0.7 * 542 = 441.4,
  // y = 56 + 0.8 * 180 = 200; (8, 3): x = 62 + 0.8 * 542 = 495.6, y = 56 + 0.7 * 180 = 182.
  CHECK(s.find("d=\"M333.0 146.0M441.4 200.0L495.6 182.0\"") != std::string::npos);
  CHECK(s.find("d=\"M62.0 236.0L604.0 56.0\"") != std::string::npos);  // b: corner to corner
  // Legend: both series and the labelled marker line once; the unlabelled line stays out. Text escaped.
  CHECK(count(s, "class=\"lg\"") == 3);
  CHECK(s.find(">b &amp; c</text>") != std::string::npos);
  CHECK(s.find(">t &lt;1&gt;</text>") != std::string::npos);
  CHECK(count(s, "class=\"band\"") == 2);
  CHECK(count(s, "fill=\"#f1f3f7\"") == 1);  // every second band shaded
  CHECK(s.find("class=\"y2t\"") == std::string::npos);  // no right-hand axis without its label
}

TEST_CASE("svg kit: log-count bars, a secondary axis, integer x ticks") {
  Chart c;
  c.y2label = "quantized value";
  c.log_bars = true;
  c.ymin = 0;
  c.bars = {{0, 1, 0}, {1, 2, 9}, {2, 3, 999}};  // heights log10(1 + h): 0, 1, 3
  Series q{"q", "#333333"};
  q.secondary = true;
  q.pts = {{0, -1}, {3, 1}};
  c.series = {q};
  c.integer_x = true;
  const std::string s = render(c, "c1");
  check_balanced(s);
  CHECK(count(s, "class=\"bar\"") == 3);
  // Count ticks 1, 10, 100, 1000 (log10(1 + 10^k) for k = 0..3), printed as counts.
  for (const char* t : {">1</text>", ">10</text>", ">100</text>", ">1000</text>"})
    CHECK_MESSAGE(s.find(t) != std::string::npos, t);
  CHECK(count(s, "class=\"y2t\"") == 3);  // -1, 0, 1 on [-1.05, 1.05]
  CHECK(count(s, "class=\"xt\"") == 4);   // 0, 1, 2, 3: no 0.5 steps
  // With a right-hand axis the right margin is 56: the plot is 620 - 62 - 56 = 502 wide, 180 high. The
  // secondary series' last point (3, 1): x = 62 + 502 = 564, y = 56 + (1 - 2.05 / 2.1) * 180 = 60.3.
  CHECK(s.find("L564.0 60.3\"") != std::string::npos);
}
