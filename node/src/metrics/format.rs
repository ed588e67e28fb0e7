//! Which exposition format a scrape gets, and the Prometheus text format 0.0.4.
//!
//! prometheus-client encodes OpenMetrics 1.0 text only. Prometheus itself asks for OpenMetrics
//! (and gets it), but `promtool check metrics`, curl and older scrapers read the text format
//! 0.0.4, which differs from OpenMetrics text in few places for what ferryd exposes: a
//! counter's `# HELP`/`# TYPE` name its samples' `_total` name, there is no `# UNIT` and no
//! `# EOF`, and `info` is not a type (its `_info` samples are a gauge). [`to_text_004`] makes
//! exactly those changes to prometheus-client's output, so one registry serves both formats;
//! sample lines, label escaping and histogram series are the same in both.

/// An exposition format and its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text004,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text004 => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// The format an `Accept` header asks for, by its q-values (the first of equals wins):
    /// OpenMetrics for `application/openmetrics-text`, the text format for `text/plain`,
    /// `text/*` and `*/*`. Without a header, or with one naming neither, the text format:
    /// what every Prometheus scraper reads (Prometheus's content negotiation guidelines).
    pub fn negotiate(accept: Option<&str>) -> Self {
        let mut best: Option<(f32, Self)> = None;
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';').map(str::trim);
            let format = match parts
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase()
                .as_str()
            {
                "application/openmetrics-text" => Self::OpenMetrics,
                "text/plain" | "text/*" | "*/*" => Self::Text004,
                _ => continue,
            };
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            if q > 0.0 && best.is_none_or(|(top, _)| q > top) {
                best = Some((q, format));
            }
        }
        best.map_or(Self::Text004, |(_, format)| format)
    }
}

/// prometheus-client's OpenMetrics text as the Prometheus text format 0.0.4 (see the module
/// documentation for what changes).
pub fn to_text_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // `# HELP` comes before `# TYPE`, which decides the name it must carry: held until then.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (base, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{base}_total"), "counter"),
                "info" => (format!("{base}_info"), "gauge"),
                "gaugehistogram" | "stateset" | "unknown" => (base.to_owned(), "untyped"),
                other => (base.to_owned(), other),
            };
            if let Some((_, text)) = help.take().filter(|(helped, _)| *helped == base) {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_q_values_and_falls_back_to_text() {
        use Format::*;
        assert_eq!(Format::negotiate(None), Text004);
        assert_eq!(Format::negotiate(Some("")), Text004);
        assert_eq!(Format::negotiate(Some("application/json")), Text004);
        assert_eq!(
            Format::negotiate(Some("text/plain; version=0.0.4")),
            Text004
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; version=1.0.0")),
            OpenMetrics
        );
        // What Prometheus 2.42 sends.
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0.2, text/plain;q=0.9")),
            Text004
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0, */*")),
            Text004
        );
    }

    #[test]
    fn openmetrics_becomes_text_004() {
        let om = "# HELP ferry_calls Calls finished.\n# TYPE ferry_calls counter\n\
                  ferry_calls_total{program=\"volume\"} 3\n\
                  # HELP ferry_open Open now.\n# TYPE ferry_open gauge\n# UNIT ferry_open bytes\nferry_open 1\n\
                  # HELP ferry_build Build.\n# TYPE ferry_build info\nferry_build_info{version=\"1\"} 1\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP ferry_calls_total Calls finished.\n# TYPE ferry_calls_total counter\n\
             ferry_calls_total{program=\"volume\"} 3\n\
             # HELP ferry_open Open now.\n# TYPE ferry_open gauge\nferry_open 1\n\
             # HELP ferry_build_info Build.\n# TYPE ferry_build_info gauge\nferry_build_info{version=\"1\"} 1\n"
        );
    }
}
