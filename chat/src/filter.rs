//! The word filter: listed words and phrases are masked with `*` wherever they stand as whole
//! words, case-insensitively (ASCII).
//!
//! Matching is one Aho-Corasick pass over the text (leftmost-longest, so "darn it" wins over
//! "darn" when both are listed), so the cost does not grow with the list. Masking replaces each
//! character of a match with one `*`: the text keeps its length in characters, and UTF-8 around a
//! match is untouched.

use std::borrow::Cow;
use std::path::Path;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

#[derive(Debug, Clone, Default)]
pub struct WordFilter {
    /// `None` for an empty list: nothing to search.
    automaton: Option<AhoCorasick>,
    words: usize,
}

/// A word list that could not be read.
#[derive(Debug)]
pub struct LoadError {
    pub path: std::path::PathBuf,
    pub source: std::io::Error,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot read the chat word list {}: {}",
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for LoadError {}

impl WordFilter {
    /// A filter for `words` (blank entries are ignored; surrounding spaces trimmed).
    pub fn from_words(words: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        let words: Vec<String> = words
            .into_iter()
            .map(|w| w.as_ref().trim().to_string())
            .filter(|w| !w.is_empty())
            .collect();
        if words.is_empty() {
            return WordFilter::default();
        }
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(&words)
            .expect("a leftmost-longest automaton over a word list always builds");
        WordFilter {
            automaton: Some(automaton),
            words: words.len(),
        }
    }

    /// A word list file's text: one word or phrase a line; blank lines and lines starting with
    /// `#` are ignored.
    pub fn from_list_text(text: &str) -> Self {
        WordFilter::from_words(
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#')),
        )
    }

    pub fn load(path: &Path) -> Result<Self, LoadError> {
        std::fs::read_to_string(path)
            .map(|text| WordFilter::from_list_text(&text))
            .map_err(|source| LoadError {
                path: path.to_path_buf(),
                source,
            })
    }

    /// How many words and phrases are listed.
    pub fn len(&self) -> usize {
        self.words
    }

    pub fn is_empty(&self) -> bool {
        self.words == 0
    }

    /// `text` with every whole-word match masked; borrowed when nothing matched.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(automaton) = &self.automaton else {
            return Cow::Borrowed(text);
        };
        let mut masked: Option<String> = None;
        let mut copied_up_to = 0;
        for found in automaton.find_iter(text) {
            let before = text[..found.start()].chars().next_back();
            let after = text[found.end()..].chars().next();
            if before.is_some_and(char::is_alphanumeric) || after.is_some_and(char::is_alphanumeric)
            {
                continue; // part of a longer word: "class" is not "ass"
            }
            let out = masked.get_or_insert_with(|| String::with_capacity(text.len()));
            out.push_str(&text[copied_up_to..found.start()]);
            out.extend(text[found.start()..found.end()].chars().map(|_| '*'));
            copied_up_to = found.end();
        }
        match masked {
            None => Cow::Borrowed(text),
            Some(mut out) => {
                out.push_str(&text[copied_up_to..]);
                Cow::Owned(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_whole_words_case_insensitively() {
        let filter = WordFilter::from_words(["darn", "heck"]);
        assert_eq!(filter.mask("Darn it, HECK!"), "**** it, ****!");
        assert_eq!(filter.mask("darning the heckler"), "darning the heckler");
        assert!(matches!(filter.mask("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_longest_listed_phrase_wins() {
        let filter = WordFilter::from_words(["darn", "darn it"]);
        assert_eq!(filter.mask("oh darn it all"), "oh ******* all");
    }

    #[test]
    fn text_around_a_match_keeps_its_utf8() {
        let filter = WordFilter::from_words(["heck"]);
        assert_eq!(filter.mask("ünï heck ✓"), "ünï **** ✓");
        assert_eq!(
            filter.mask("éheck"),
            "éheck",
            "a letter before is part of the word"
        );
    }

    #[test]
    fn an_empty_list_changes_nothing() {
        let filter = WordFilter::from_list_text("# only comments\n\n   \n");
        assert!(filter.is_empty());
        assert_eq!(filter.mask("darn"), "darn");
    }

    #[test]
    fn list_files_skip_comments_and_blank_lines() {
        let filter = WordFilter::from_list_text("# words\n darn \n\nheck\n#not this\n");
        assert_eq!(filter.len(), 2);
        assert_eq!(filter.mask("not this"), "not this");
    }

    #[test]
    fn a_missing_list_names_its_path() {
        let error = WordFilter::load(Path::new("/nonexistent/words.txt")).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("/nonexistent/words.txt"), "{message}");
    }
}
