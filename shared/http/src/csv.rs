//! History as CSV (`Accept: text/csv`): one row per entry, as a
//! spreadsheet opens it. RFC 4180: a header row, CRLF line ends, a field
//! quoted when it holds a comma, a quote or a line break (quotes doubled);
//! amounts as decimals in the entry's unit, never floats.

use ledger_domain::catalog::MeterKind;
use ledger_domain::{Catalog, LedgerEntry, MeterId};
use ledger_service::exports::ExportFormat;

const HEADER: [&str; 12] = [
    "id",
    "seq",
    "at",
    "kind",
    "user",
    "caller",
    "action",
    "campaign",
    "subject",
    "quantity",
    "result",
    "bucket_lines",
];

/// The history's CSV columns: the entry's fields, then two per balance
/// meter of the catalog (the entry's net change of it, and the balance
/// right after). The same columns whatever the entries, so every export of
/// a deployment, and every part of one, lines up.
pub struct HistoryCsv {
    meters: Vec<MeterId>,
}

impl HistoryCsv {
    pub fn for_catalog(catalog: &Catalog) -> HistoryCsv {
        HistoryCsv {
            meters: catalog
                .meters
                .iter()
                .filter(|(_, m)| m.kind != MeterKind::Capacity)
                .map(|(id, _)| id.clone())
                .collect(),
        }
    }

    /// The whole file: the header, then one row per entry.
    pub fn document(&self, entries: &[LedgerEntry]) -> String {
        let mut out = self.header();
        out.push_str(&self.rows(entries));
        out
    }
}

impl ExportFormat for HistoryCsv {
    fn header(&self) -> String {
        let mut header: Vec<String> = HEADER.iter().map(|h| h.to_string()).collect();
        for m in &self.meters {
            header.push(format!("{m}_change"));
            header.push(format!("{m}_balance_after"));
        }
        let mut out = String::new();
        row(&mut out, &header);
        out
    }

    fn rows(&self, entries: &[LedgerEntry]) -> String {
        let mut out = String::new();
        for e in entries {
            let lines: Vec<String> = e.lines.iter().map(|l| format!("{}={}", l.bucket, l.amount)).collect();
            let mut fields = vec![
                e.id.clone(),
                e.seq().map(|s| s.to_string()).unwrap_or_default(),
                e.at.to_rfc3339(),
                serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                e.actor.user.as_ref().map(|u| u.to_string()).unwrap_or_default(),
                serde_json::to_value(e.actor.caller)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                e.action.as_ref().map(|a| a.to_string()).unwrap_or_default(),
                e.campaign.as_ref().map(|c| c.to_string()).unwrap_or_default(),
                e.subject.as_ref().map(|s| s.as_str().to_string()).unwrap_or_default(),
                e.quantity.map(|q| q.to_string()).unwrap_or_default(),
                e.result.clone().unwrap_or_default(),
                lines.join(" "),
            ];
            for m in &self.meters {
                fields.push(e.net(m).to_string());
                fields.push(
                    e.placement
                        .as_ref()
                        .and_then(|p| p.balance_after.get(m))
                        .map(|b| b.to_string())
                        .unwrap_or_default(),
                );
            }
            row(&mut out, &fields);
        }
        out
    }
}

fn row(out: &mut String, fields: &[String]) {
    let quoted: Vec<String> = fields.iter().map(|f| field(f)).collect();
    out.push_str(&quoted.join(","));
    out.push_str("\r\n");
}

fn field(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_with_commas_quotes_or_breaks_are_quoted() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
    }
}
