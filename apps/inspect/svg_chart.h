// A small SVG chart kit for the inspect report: line series (NaN breaks a line), histogram bars (optionally on
// a log10(1 + count) axis), vertical marker lines, shaded x bands with labels, a secondary y axis, ticks at
// 1-2-5 steps, a one-row legend, and <title> tooltips. It writes one self-contained <svg> element: no scripts,
// no external references, styling by the class names the page's CSS defines (ct, xt, yt, y2t, xl, lg, grid,
// frame, bar, band). Not the page (page.h), and it knows nothing of quantizers or runs.
#pragma once
#include <cmath>
#include <string>
#include <utility>
#include <vector>

namespace apps::svg {

// Text for HTML and SVG: & < > " escaped.
std::string esc(const std::string& s);
// printf-formatted number; "-" for NaN and infinities.
std::string num(double v, const char* format = "%.4g");
// A pixel coordinate, one decimal.
std::string px(double v);
// About n steps of 1, 2 or 5 × 10^k covering [lo, hi]; {lo} when the range is empty.
std::vector<double> nice_ticks(double lo, double hi, int n);

struct Series {
  Series(std::string l, std::string c) : label(std::move(l)), color(std::move(c)) {}
  std::string label, color;
  std::vector<std::pair<double, double>> pts;  // (x, y); a NaN y breaks the line
  bool dashed = false;
  bool markers = true;     // a circle with a tooltip at every point
  bool secondary = false;  // on the right-hand axis [y2min, y2max]
  double width = 1.8;
};
struct VLine {
  double x;
  std::string label, color;  // an empty label stays out of the legend and the tooltip says only the value
  bool dashed = true;
};
struct Bar {
  double x0, x1, h;
};
struct Band {  // a shaded x range with a label above the plot (a training stage)
  double x0, x1;
  std::string label;
};

struct Chart {
  std::string title, xlabel, ylabel, y2label;  // no y2label: no right-hand axis
  int w = 620, h = 280;
  double xmin = NAN, xmax = NAN, ymin = NAN, ymax = NAN;  // NaN: from the data
  double y2min = -1.05, y2max = 1.05;
  bool integer_x = false;  // x ticks at integers only (epochs)
  bool log_bars = false;   // bar heights on a log10(1 + count) axis: tails and outliers stay visible
  std::vector<Series> series;
  std::vector<VLine> vlines;
  std::vector<Bar> bars;
  std::vector<Band> bands;  // every second one shaded
};

// The chart as one <svg class="chart"> element. clip_id names its plot-area clip path: unique within a page.
std::string render(const Chart& c, const std::string& clip_id);

}  // namespace apps::svg
