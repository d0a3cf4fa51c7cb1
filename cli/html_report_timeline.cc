// The HTML report's timeline: one lane per target, a bar per run, pins for
// failures and drift, on a UTC axis with ticks at round times. Inline SVG.
#include <algorithm>
#include <climits>
#include <cstdio>

#include "cli/html_report_internal.h"
#include "common/time_util.h"

namespace migledger::html_report {
namespace {

// Colours of the SVG marks (the CSS variables do not reach SVG attributes in
// every viewer, so they are literal).
const char* RunFill(const RunInfo& r) {
  if (!r.finished) return "#afb8c1";
  return r.outcome == v1::OUTCOME_FAILED ? "#cf222e" : "#2da44e";
}

struct TickStep {
  int64_t micros;
  int kind;  // 0: sub-second, 1: seconds, 2: minutes/hours, 3: days
};

std::string TickLabel(int64_t t, const TickStep& step, bool multi_day) {
  std::string s = FormatRfc3339(t);  // YYYY-MM-DDTHH:MM:SS.ffffffZ
  switch (step.kind) {
    case 0:
      return s.substr(11, 12);  // HH:MM:SS.mmm
    case 1:
      return s.substr(11, 8);
    case 2:
      return multi_day ? s.substr(5, 5) + " " + s.substr(11, 5)
                       : s.substr(11, 5);
    default:
      return s.substr(0, 10);
  }
}

// The widest step with at most 9 ticks between lo and hi.
TickStep ChooseTickStep(int64_t lo, int64_t hi) {
  static const TickStep kSteps[] = {
      {1000, 0},          {2000, 0},          {5000, 0},
      {10000, 0},         {20000, 0},         {50000, 0},
      {100000, 0},        {200000, 0},        {500000, 0},
      {1000000, 1},       {2000000, 1},       {5000000, 1},
      {10000000, 1},      {15000000, 1},      {30000000, 1},
      {60000000, 2},      {120000000, 2},     {300000000, 2},
      {600000000, 2},     {900000000, 2},     {1800000000, 2},
      {3600000000, 2},    {7200000000, 2},    {10800000000, 2},
      {21600000000, 2},   {43200000000, 2},   {86400000000, 3},
      {172800000000, 3},  {604800000000, 3},  {1209600000000, 3},
      {2592000000000, 3}, {7776000000000, 3}, {31536000000000, 3}};
  for (const TickStep& s : kSteps) {
    if ((hi - lo) / s.micros <= 9) return s;
  }
  return kSteps[std::size(kSteps) - 1];
}

constexpr double kWidth = 1100, kLeft = 168, kRight = 20, kTop = 8, kLane = 46,
                 kAxis = 34;
constexpr double kPlot = kWidth - kLeft - kRight;

// The timeline's layout (lanes and time range) and its parts in SVG.
class Timeline {
 public:
  explicit Timeline(const Report& r) : r_(r) {
    // Lanes: one per target that has runs or markers, in order of
    // appearance.
    for (const RunInfo& run : r.runs) {
      LaneOf(run.target_key);
      lo_ = std::min(lo_, run.started.value_or(run.first));
      hi_ = std::max(hi_, run.finished.value_or(run.last));
    }
    for (const Marker& m : r.markers) {
      LaneOf(m.target_key);
      lo_ = std::min(lo_, m.time);
      hi_ = std::max(hi_, m.time);
    }
    if (lanes_.empty()) return;
    if (hi_ - lo_ < 1000) {  // one instant: show a second around it
      lo_ -= 500000;
      hi_ += 500000;
    }
    int64_t pad = (hi_ - lo_) / 25;
    lo_ -= pad;
    hi_ += pad;
  }

  bool empty() const { return lanes_.empty(); }

  Html Svg() {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "<svg id=\"timeline-svg\" viewBox=\"0 0 %.0f %.0f\" "
                  "role=\"img\" aria-label=\"Runs over time\">\n",
                  kWidth, kTop + kLane * lanes_.size() + kAxis);
    Html svg = buf;
    svg += LaneBackgrounds();
    svg += Axis();
    for (const RunInfo& run : r_.runs) svg += RunBar(run);
    // Failures (red diamonds) and drift (amber triangles): pins above the
    // run they happened in.
    for (const Marker& m : r_.markers) svg += Pin(m);
    svg += "</svg>\n";
    return svg;
  }

 private:
  size_t LaneOf(const std::string& key) {
    auto it = std::find(lanes_.begin(), lanes_.end(), key);
    if (it != lanes_.end()) return static_cast<size_t>(it - lanes_.begin());
    lanes_.push_back(key);
    return lanes_.size() - 1;
  }

  double XOf(int64_t t) const {
    return kLeft + kPlot * static_cast<double>(t - lo_) /
                       static_cast<double>(hi_ - lo_);
  }

  // Lane backgrounds and labels.
  Html LaneBackgrounds() const {
    char buf[512];
    Html svg;
    for (size_t i = 0; i < lanes_.size(); ++i) {
      double y = kTop + kLane * i;
      auto it = r_.targets.find(lanes_[i]);
      std::string label =
          it == r_.targets.end() ? "(no target)" : TargetLabel(it->second.ref);
      std::string shown = label.size() > 22 ? label.substr(0, 21) + "…" : label;
      std::snprintf(buf, sizeof buf,
                    "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                    "height=\"%.1f\" fill=\"%s\"/>\n",
                    kLeft, y, kPlot, kLane, i % 2 ? "#ffffff" : "#f6f8fa");
      svg += buf;
      std::snprintf(buf, sizeof buf,
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" "
                    "font-size=\"13\" fill=\"#1f2328\">",
                    kLeft - 12, y + kLane / 2 + 4.5);
      svg += buf;
      svg += "<title>" + E(label) + "</title>" + E(shown) + "</text>\n";
    }
    return svg;
  }

  // Grid and axis.
  Html Axis() const {
    char buf[512];
    Html svg;
    const TickStep step = ChooseTickStep(lo_, hi_);
    const bool multi_day = lo_ / 86400000000LL != hi_ / 86400000000LL;
    const double axis_y = kTop + kLane * lanes_.size();
    int64_t first =
        (lo_ / step.micros + (lo_ % step.micros > 0 ? 1 : 0)) * step.micros;
    for (int64_t t = first; t <= hi_; t += step.micros) {
      double x = XOf(t);
      std::snprintf(buf, sizeof buf,
                    "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                    "stroke=\"#d8dee4\" stroke-width=\"1\"/>\n",
                    x, kTop, x, axis_y + 5);
      svg += buf;
      std::string label = TickLabel(t, step, multi_day);
      double half = 3.4 * label.size();  // about half the label's width
      if (x - half < kLeft - 4 || x + half > kWidth - 2) continue;
      std::snprintf(buf, sizeof buf,
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
                    "font-size=\"11.5\" fill=\"#59636e\">",
                    x, axis_y + 19);
      svg += buf;
      svg += E(label) + "</text>\n";
    }
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                  "stroke=\"#8c959f\" stroke-width=\"1\"/>\n"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" "
                  "font-size=\"11.5\" fill=\"#818b98\">UTC</text>\n",
                  kLeft, axis_y, kWidth - kRight, axis_y, kLeft - 12,
                  axis_y + 19);
    svg += buf;
    return svg;
  }

  // One bar per run.
  Html RunBar(const RunInfo& run) {
    size_t lane = LaneOf(run.target_key);
    int64_t start = run.started.value_or(run.first);
    int64_t end = run.finished.value_or(run.last);
    double x1 = XOf(start), x2 = XOf(end);
    double w = x2 - x1;
    if (w < 8) {  // too short to see: an 8 px mark centred on the run
      x1 = (x1 + x2) / 2 - 4;
      w = 8;
    }
    x1 = std::max(x1, kLeft);
    if (x1 + w > kWidth - kRight) x1 = kWidth - kRight - w;
    double y = kTop + kLane * lane + kLane / 2 - 2;
    std::string title = std::string("Run ") + RunOutcomeName(run) + " — " +
                        run.target_label + "\n" + ShortTime(start) + " UTC";
    if (run.finished)
      title += " → " + ShortTime(end) + " (" + Duration(end - start) + ")";
    if (!run.actor.empty()) title += "\nby " + run.actor;
    if (!run.command.empty()) title += "\n" + run.command;
    if (!run.reason.empty()) title += "\nreason: " + run.reason;
    if (!run.message.empty()) title += "\n" + run.message;
    title += "\nrun " + run.run_id;
    char buf[512];
    std::snprintf(
        buf, sizeof buf,
        "<rect class=\"run %s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
        "height=\"14\" rx=\"3\" fill=\"%s\"%s>",
        RunOutcomeClass(run), x1, y, w, RunFill(run),
        run.finished ? "" : " stroke=\"#6e7781\" stroke-dasharray=\"3 2\"");
    return buf + ("<title>" + E(title) + "</title></rect>\n");
  }

  Html Pin(const Marker& m) {
    size_t lane = LaneOf(m.target_key);
    double x = std::clamp(XOf(m.time), kLeft + 6, kWidth - kRight - 6);
    double top = kTop + kLane * lane + 4;  // marker top; bar starts at +21
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                  "stroke=\"%s\" stroke-width=\"1.5\"/>\n",
                  x, top + 10, x, top + 18, m.failure ? "#82071e" : "#bf8700");
    Html svg = buf;
    if (m.failure) {
      std::snprintf(buf, sizeof buf,
                    "<path class=\"failure-mark\" d=\"M%.1f %.1fl6.5 6.5-6.5 "
                    "6.5-6.5-6.5z\" fill=\"#82071e\" stroke=\"#ffffff\" "
                    "stroke-width=\"1\">",
                    x, top);
    } else {
      std::snprintf(buf, sizeof buf,
                    "<path class=\"drift-mark\" d=\"M%.1f %.1fl7 12h-14z\" "
                    "fill=\"#d4a72c\" stroke=\"#ffffff\" stroke-width=\"1\">",
                    x, top);
    }
    svg += buf;
    svg += "<title>" + E(ShortTime(m.time) + " UTC\n" + m.text) +
           "</title></path>\n";
    return svg;
  }

  const Report& r_;
  std::vector<std::string> lanes_;
  int64_t lo_ = LLONG_MAX, hi_ = LLONG_MIN;
};

}  // namespace

Html TimelineSvg(const Report& r) {
  Timeline timeline(r);
  if (timeline.empty()) return "";
  return timeline.Svg();
}

}  // namespace migledger::html_report
