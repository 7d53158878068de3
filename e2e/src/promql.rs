//! The metric names a PromQL expression reads — enough of PromQL to check that dashboards and
//! alerts reference only metrics something produces. Label matchers, label lists (`by`,
//! `on`, ...), range selectors, strings, functions, aggregations, keywords and Grafana
//! variables (`$cluster`, `${__rate_interval}`) are not metric names.

use std::collections::BTreeSet;

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "limitk",
    "limit_ratio",
];
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the bracket that closes the one at `open`.
fn skip_group(chars: &[char], open: usize, opening: char, closing: char) -> usize {
    let mut depth = 0;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i) - 1,
            c if c == opening => depth += 1,
            c if c == closing => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

/// Index just past the string starting at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == '\\' && quote != '`' {
            i += 2;
            continue;
        }
        if chars[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    chars.len()
}

/// The metric names `expr` selects.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_group(&chars, i, '{', '}');
        } else if c == '[' {
            i = skip_group(&chars, i, '[', ']');
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_group(&chars, i, '{', '}');
            } else {
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let lower = word.to_ascii_lowercase();
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                if chars.get(next) == Some(&'(') {
                    i = skip_group(&chars, next, '(', ')');
                }
            } else if chars.get(next) == Some(&'(')
                || AGGREGATIONS.contains(&lower.as_str())
                || KEYWORDS.contains(&lower.as_str())
            {
                // A function call, an aggregation or an operator keyword.
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
    }

    #[test]
    fn plain_selectors_and_matchers() {
        assert_eq!(names("pg_up"), ["pg_up"]);
        assert_eq!(
            names(r#"tusk_pg_role_primary{namespace="db", cluster=~"a|b"} == 0"#),
            ["tusk_pg_role_primary"]
        );
    }

    #[test]
    fn functions_aggregations_and_label_lists_are_not_metrics() {
        let expr = "sum by (controller, reason) (rate(tusk_reconcile_errors_total[5m])) \
                    / on (controller) group_left sum without (result) (rate(tusk_reconcile_total[5m]))";
        assert_eq!(
            names(expr),
            ["tusk_reconcile_errors_total", "tusk_reconcile_total"]
        );
        assert_eq!(
            names(
                "histogram_quantile(0.99, sum by (le) (rate(tusk_reconcile_duration_seconds_bucket[$__rate_interval])))"
            ),
            ["tusk_reconcile_duration_seconds_bucket"]
        );
    }

    #[test]
    fn binary_operators_keywords_and_numbers() {
        let expr = "(kubelet_volume_stats_available_bytes / kubelet_volume_stats_capacity_bytes) < 0.1 \
                    and kubelet_volume_stats_capacity_bytes offset 5m > 1e9 unless pg_up == bool 0";
        assert_eq!(
            names(expr),
            [
                "kubelet_volume_stats_available_bytes",
                "kubelet_volume_stats_capacity_bytes",
                "pg_up"
            ]
        );
    }

    #[test]
    fn grafana_variables_and_strings_are_skipped() {
        assert_eq!(
            names(
                r#"label_replace(tusk_pg_database_size_bytes{namespace="$namespace", cluster="${cluster}"}, "db", "$1", "database", "(.*)")"#
            ),
            ["tusk_pg_database_size_bytes"]
        );
        assert!(names("$cluster").is_empty());
    }
}
