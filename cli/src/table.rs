//! Plain text tables for people (`-o table`): each column as wide as its widest cell, two
//! spaces apart, a row's notes on indented lines under it.

/// A table row: its cells, and lines said under it.
pub struct Row {
    pub cells: Vec<String>,
    pub notes: Vec<String>,
}

/// `header` and `rows` as lines of text.
#[must_use]
pub fn render(header: &[&str], rows: &[Row]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(&row.cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", text.join("  ").trim_end())
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.cells.iter().map(String::as_str)));
        for note in &row.notes {
            out.push_str("  ");
            out.push_str(note);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_notes_follow_their_row() {
        let rows = [
            Row {
                cells: vec!["a-long-name".into(), "1".into()],
                notes: vec!["held by: n1".into()],
            },
            Row {
                cells: vec!["b".into(), "22".into()],
                notes: Vec::new(),
            },
        ];
        assert_eq!(
            render(&["NAME", "N"], &rows),
            "NAME         N\na-long-name  1\n  held by: n1\nb            22\n"
        );
    }
}
