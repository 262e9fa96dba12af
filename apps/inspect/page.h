// The self-contained HTML page of `qil inspect --html`: header and per-stage table, the accuracy chart, the
// overview table and one section per quantized layer, with inline CSS and inline SVG; no scripts and nothing
// fetched from elsewhere, so the file opens offline. Not the charts themselves (charts.h), not the terminal
// table or JSON/CSV records (report.h).
#pragma once
#include <string>

#include "apps/inspect/target.h"

namespace apps {

std::string html_report(const InspectData& in);

}  // namespace apps
