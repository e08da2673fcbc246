//! A config file's text, and problems found in it, each at a place: `FILE:LINE:COL: message`,
//! the form editors and CI logs link to.
use std::{fmt, ops::Range, path::Path};

/// The file being read: its name as the user gave it, and its text.
#[derive(Debug)]
pub struct Source {
    pub path: String,
    pub text: String,
}

impl Source {
    pub fn read(path: &Path) -> Result<Source, Problems> {
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Source { path: name, text }),
            Err(e) => Err(Problems(vec![format!(
                "{name}: cannot read the config file: {e}; check the path given to --config"
            )])),
        }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// `message` placed at the start of `span` (the file's start without one).
    pub fn at(&self, span: Option<Range<usize>>, message: impl fmt::Display) -> String {
        let (line, col) = self.line_col(span.map_or(0, |s| s.start));
        format!("{}:{line}:{col}: {message}", self.path)
    }

    /// A TOML error, placed where the parser stopped.
    pub fn toml_error(&self, e: &toml::de::Error) -> String {
        self.at(e.span(), e.message().trim_end())
    }
}

/// Every problem found, one line each.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl Problems {
    /// `problems` (each made by [`Source::at`]) sorted by line and column.
    pub fn in_file_order(mut problems: Vec<String>, source: &Source) -> Problems {
        let place = |p: &String| -> (usize, usize) {
            let rest = p
                .strip_prefix(&source.path)
                .and_then(|r| r.strip_prefix(':'))
                .unwrap_or("");
            let mut numbers = rest.splitn(3, ':').map(|n| n.parse().unwrap_or(usize::MAX));
            (
                numbers.next().unwrap_or(usize::MAX),
                numbers.next().unwrap_or(usize::MAX),
            )
        };
        problems.sort_by_key(place);
        Problems(problems)
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for Problems {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_lines_and_columns_from_one() {
        let source = Source {
            path: "c.toml".into(),
            text: "a = 1\nbé = 2\n".into(),
        };
        assert_eq!(source.at(Some(0..1), "x"), "c.toml:1:1: x");
        let offset = source.text.find("= 2").unwrap();
        assert_eq!(source.at(Some(offset..offset + 1), "y"), "c.toml:2:4: y");
        assert_eq!(source.at(None, "z"), "c.toml:1:1: z");
    }
}
