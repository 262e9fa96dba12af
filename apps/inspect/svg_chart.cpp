// The SVG chart kit: layout (ranges and pixel maps), then one short function per layer of the drawing, in the
// order they are painted (bands, grid and ticks, frame and axis labels, bars, marker lines, series, legend).
#include "apps/inspect/svg_chart.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <sstream>

namespace apps::svg {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string num(double v, const char* format) {
  if (!std::isfinite(v)) return "-";
  char b[64];
  std::snprintf(b, sizeof b, format, v);
  return b;
}

std::string px(double v) { return num(v, "%.1f"); }

std::vector<double> nice_ticks(double lo, double hi, int n) {
  std::vector<double> t;
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / n;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + 1e-9 * step; v += step)
    t.push_back(std::abs(v) < 1e-12 * step ? 0.0 : v);  // -1e-17 printed as "-1e-17" instead of 0
  return t;
}

namespace {

// The plot area inside fixed margins, the axis ranges, and the maps from data to pixels.
struct Frame {
  double ml = 62, mr = 16, mt = 56, mb = 44;  // margins: left, right, top (title, legend, bands), bottom
  double pw = 0, ph = 0;                      // plot width and height
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1, y2min = -1, y2max = 1;
  double X(double x) const { return ml + (x - x0) / (x1 - x0) * pw; }
  double Y(double y) const { return mt + (1 - (y - y0) / (y1 - y0)) * ph; }
  double Y2(double y) const { return mt + (1 - (y - y2min) / (y2max - y2min)) * ph; }
};

double bar_y(const Chart& c, double h) { return c.log_bars ? std::log10(1.0 + h) : h; }

void widen(double& lo, double& hi, double v) {
  if (!std::isfinite(v)) return;
  if (!std::isfinite(lo) || v < lo) lo = v;
  if (!std::isfinite(hi) || v > hi) hi = v;
}

// What the data spans: series points (y of the primary axis only), bars from 0 to their tops, marker lines.
struct Extent {
  double x0 = NAN, x1 = NAN, y0 = NAN, y1 = NAN;
};
Extent data_extent(const Chart& c) {
  Extent e;
  for (const auto& s : c.series)
    for (auto [x, y] : s.pts) {
      widen(e.x0, e.x1, x);
      if (!s.secondary) widen(e.y0, e.y1, y);
    }
  for (const auto& b : c.bars) {
    widen(e.x0, e.x1, b.x0);
    widen(e.x0, e.x1, b.x1);
    widen(e.y0, e.y1, 0.0);
    widen(e.y0, e.y1, bar_y(c, b.h));
  }
  for (const auto& v : c.vlines) widen(e.x0, e.x1, v.x);
  return e;
}

// The chart's own ranges where it sets them, else the data's; a y range from the data is padded by 6% so
// lines do not run along the frame (except below histogram bars, which stand on 0).
Frame frame_of(const Chart& c) {
  Frame f;
  if (!c.y2label.empty()) f.mr = 56;
  f.pw = c.w - f.ml - f.mr;
  f.ph = c.h - f.mt - f.mb;
  f.y2min = c.y2min;
  f.y2max = c.y2max;
  const Extent e = data_extent(c);
  auto pick = [](double set, double data) { return std::isfinite(set) ? set : data; };
  double x0 = pick(c.xmin, e.x0), x1 = pick(c.xmax, e.x1), y0 = pick(c.ymin, e.y0), y1 = pick(c.ymax, e.y1);
  if (!std::isfinite(x0) || !std::isfinite(x1)) x0 = 0, x1 = 1;
  if (!std::isfinite(y0) || !std::isfinite(y1)) y0 = 0, y1 = 1;
  if (x1 <= x0) x0 -= 0.5, x1 += 0.5;
  if (y1 <= y0) {
    const double pad = std::abs(y0) > 0 ? std::abs(y0) * 0.1 : 0.5;
    y0 -= pad, y1 += pad;
  } else if (!std::isfinite(c.ymin) || !std::isfinite(c.ymax)) {
    const double pad = 0.06 * (y1 - y0);
    if (!std::isfinite(c.ymin) && !(c.bars.size() && y0 == 0)) y0 -= pad;
    if (!std::isfinite(c.ymax)) y1 += pad;
  }
  f.x0 = x0, f.x1 = x1, f.y0 = y0, f.y1 = y1;
  return f;
}

void draw_bands(std::ostream& o, const Chart& c, const Frame& f) {
  for (size_t i = 0; i < c.bands.size(); ++i) {
    const double a = std::max(f.X(c.bands[i].x0), f.ml), b = std::min(f.X(c.bands[i].x1), f.ml + f.pw);
    if (b <= a) continue;
    if (i % 2 == 1)
      o << "<rect x=\"" << px(a) << "\" y=\"" << f.mt << "\" width=\"" << px(b - a) << "\" height=\"" << px(f.ph)
        << "\" fill=\"#f1f3f7\"/>";
    o << "<text x=\"" << px((a + b) / 2) << "\" y=\"" << f.mt - 5 << "\" class=\"band\">" << esc(c.bands[i].label)
      << "</text>";
  }
}

// Log-scale bars: ticks at counts 1, 10, 100, ... (a tick at 0 would sit on top of 1).
std::vector<double> y_ticks(const Chart& c, const Frame& f) {
  if (!c.log_bars) return nice_ticks(f.y0, f.y1, 5);
  std::vector<double> t;
  for (double k = 0; k <= f.y1; k += 1) t.push_back(std::log10(1.0 + std::pow(10.0, k)));
  return t;
}

std::vector<double> x_ticks(const Chart& c, const Frame& f) {
  std::vector<double> t = nice_ticks(f.x0, f.x1, 7);
  if (!c.integer_x) return t;
  t.erase(std::remove_if(t.begin(), t.end(), [](double v) { return std::abs(v - std::round(v)) > 1e-9; }), t.end());
  if (t.empty()) t.push_back(std::round((f.x0 + f.x1) / 2));
  return t;
}

void draw_grid(std::ostream& o, const Chart& c, const Frame& f) {
  o << "<g class=\"grid\">";
  for (double t : y_ticks(c, f))
    o << "<line x1=\"" << f.ml << "\" x2=\"" << px(f.ml + f.pw) << "\" y1=\"" << px(f.Y(t)) << "\" y2=\""
      << px(f.Y(t)) << "\"/><text x=\"" << f.ml - 6 << "\" y=\"" << px(f.Y(t) + 4) << "\" class=\"yt\">"
      << num(c.log_bars ? std::round(std::pow(10.0, t) - 1) : t, c.log_bars ? "%.0f" : "%.4g") << "</text>";
  for (double t : x_ticks(c, f))
    o << "<line x1=\"" << px(f.X(t)) << "\" x2=\"" << px(f.X(t)) << "\" y1=\"" << f.mt << "\" y2=\""
      << px(f.mt + f.ph) << "\"/><text x=\"" << px(f.X(t)) << "\" y=\"" << px(f.mt + f.ph + 15)
      << "\" class=\"xt\">" << num(t) << "</text>";
  if (!c.y2label.empty())
    for (double t : nice_ticks(f.y2min, f.y2max, 4))
      o << "<text x=\"" << px(f.ml + f.pw + 6) << "\" y=\"" << px(f.Y2(t) + 4) << "\" class=\"y2t\">" << num(t)
        << "</text>";
  o << "</g>";
}

void draw_frame_and_labels(std::ostream& o, const Chart& c, const Frame& f) {
  o << "<rect x=\"" << f.ml << "\" y=\"" << f.mt << "\" width=\"" << px(f.pw) << "\" height=\"" << px(f.ph)
    << "\" class=\"frame\"/>";
  o << "<text x=\"" << px(f.ml + f.pw / 2) << "\" y=\"" << c.h - 8 << "\" class=\"xl\">" << esc(c.xlabel)
    << "</text>";
  o << "<text transform=\"translate(14," << px(f.mt + f.ph / 2) << ") rotate(-90)\" class=\"xl\">" << esc(c.ylabel)
    << "</text>";
  if (!c.y2label.empty())
    o << "<text transform=\"translate(" << c.w - 10 << "," << px(f.mt + f.ph / 2) << ") rotate(90)\" class=\"xl\">"
      << esc(c.y2label) << "</text>";
}

void draw_bars(std::ostream& o, const Chart& c, const Frame& f) {
  for (const auto& b : c.bars)
    o << "<rect x=\"" << px(f.X(b.x0)) << "\" y=\"" << px(f.Y(bar_y(c, b.h))) << "\" width=\""
      << px(std::max(0.5, f.X(b.x1) - f.X(b.x0))) << "\" height=\"" << px(f.Y(0) - f.Y(bar_y(c, b.h)))
      << "\" class=\"bar\"><title>[" << num(b.x0) << ", " << num(b.x1) << "): " << num(b.h, "%.0f")
      << "</title></rect>";
}

void draw_vlines(std::ostream& o, const Chart& c, const Frame& f) {
  for (const auto& v : c.vlines)
    o << "<line x1=\"" << px(f.X(v.x)) << "\" x2=\"" << px(f.X(v.x)) << "\" y1=\"" << f.mt << "\" y2=\""
      << px(f.mt + f.ph) << "\" stroke=\"" << v.color << "\" stroke-width=\"1.4\""
      << (v.dashed ? " stroke-dasharray=\"5 3\"" : "") << "><title>" << esc(v.label) << " = " << num(v.x)
      << "</title></line>";
}

// One <path> per series (a NaN y lifts the pen), then its markers.
void draw_series(std::ostream& o, const Chart& c, const Frame& f, const Series& s) {
  auto y_px = [&](double y) { return s.secondary ? f.Y2(y) : f.Y(y); };
  std::string d;
  bool pen = false;
  for (auto [x, y] : s.pts) {
    if (!std::isfinite(y)) {
      pen = false;
      continue;
    }
    d += (pen ? "L" : "M") + px(f.X(x)) + " " + px(y_px(y));
    pen = true;
  }
  o << "<path d=\"" << d << "\" fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"" << s.width << "\""
    << (s.dashed ? " stroke-dasharray=\"6 4\"" : "") << "/>";
  if (!s.markers) return;
  for (auto [x, y] : s.pts)
    if (std::isfinite(y))
      o << "<circle cx=\"" << px(f.X(x)) << "\" cy=\"" << px(y_px(y)) << "\" r=\"3\" fill=\"" << s.color
        << "\"><title>" << esc(s.label) << " @ " << esc(c.xlabel) << " " << num(x) << ": " << num(y, "%.5g")
        << "</title></circle>";
}

// One row at the top right, laid out from the right: the series, then each distinct labelled marker line.
void draw_legend(std::ostream& o, const Chart& c, const Frame& f) {
  std::vector<std::pair<std::string, std::string>> items;  // label, color
  for (const auto& s : c.series) items.push_back({s.label, s.color});
  std::set<std::string> seen;
  for (const auto& v : c.vlines)
    if (!v.label.empty() && seen.insert(v.label).second) items.push_back({v.label, v.color});
  double lx = f.ml + f.pw;
  for (auto it = items.rbegin(); it != items.rend(); ++it) {
    const auto& label = it->first;  // width by code points, not UTF-8 bytes
    const double chars =
        static_cast<double>(std::count_if(label.begin(), label.end(), [](char ch) { return (ch & 0xC0) != 0x80; }));
    lx -= 6.4 * chars + 26;
    o << "<rect x=\"" << px(lx) << "\" y=\"25\" width=\"12\" height=\"4\" fill=\"" << it->second
      << "\"/><text x=\"" << px(lx + 15) << "\" y=\"31\" class=\"lg\">" << esc(label) << "</text>";
  }
}

}  // namespace

std::string render(const Chart& c, const std::string& clip_id) {
  const Frame f = frame_of(c);
  std::ostringstream o;
  o << "<svg class=\"chart\" width=\"" << c.w << "\" height=\"" << c.h << "\" viewBox=\"0 0 " << c.w << " " << c.h
    << "\" role=\"img\">";
  o << "<text x=\"10\" y=\"16\" class=\"ct\">" << esc(c.title) << "</text>";
  o << "<defs><clipPath id=\"" << clip_id << "\"><rect x=\"" << f.ml << "\" y=\"" << f.mt << "\" width=\""
    << px(f.pw) << "\" height=\"" << px(f.ph) << "\"/></clipPath></defs>";
  draw_bands(o, c, f);
  draw_grid(o, c, f);
  draw_frame_and_labels(o, c, f);
  o << "<g clip-path=\"url(#" << clip_id << ")\">";
  draw_bars(o, c, f);
  draw_vlines(o, c, f);
  for (const auto& s : c.series) draw_series(o, c, f, s);
  o << "</g>";
  draw_legend(o, c, f);
  o << "</svg>";
  return o.str();
}

}  // namespace apps::svg
