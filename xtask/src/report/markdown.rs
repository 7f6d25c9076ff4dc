//! Markdown tables.

/// A table with a header row. Invariant (checked by [`Table::push`]): every row has as many
/// cells as there are headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Self {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; a row with the wrong number of cells is padded with empty cells or
    /// truncated to the header width, so a table always renders.
    pub fn push<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    /// The table as GitHub-flavoured Markdown (pipes inside cells escaped), ending in a
    /// newline.
    pub fn render(&self) -> String {
        let line = |cells: &[String]| {
            let escaped: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            format!("| {} |\n", escaped.join(" | "))
        };
        let mut out = line(&self.headers);
        out.push_str(&format!("|{}\n", "---|".repeat(self.headers.len())));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_headers_rule_and_rows() {
        let mut table = Table::new(["system", "utilisation"]);
        table.push(["vellum", "96.1%"]);
        table.push(["a|b"]);
        assert_eq!(
            table.render(),
            "| system | utilisation |\n|---|---|\n| vellum | 96.1% |\n| a\\|b |  |\n"
        );
    }
}
