//! LIKE patterns (JMS 2.0 §3.8.1.2): `_` stands for any one character, `%`
//! for any run of characters, and the ESCAPE character makes the character
//! after it literal.
//!
//! Matching never backtracks, so no pattern can make it exponential. The
//! pattern is split at its `%`s into segments, each a fixed number of
//! characters long. The first segment must match at the start of the text,
//! the last at the end, and each one between at its leftmost place after
//! the one before: a later place is never better, since all that the rest
//! of the pattern needs from it is room. A segment of plain characters is
//! found by `memchr`'s substring search (SIMD, linear time); one with `_` by
//! a bit-parallel shift-and scan, O(n·⌈k/64⌉) for n characters of text and a
//! segment of k. A whole match is O(n·⌈m/64⌉) at worst for a pattern of m
//! characters.

use memchr::memmem;

/// One character position of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Atom {
    Char(char),
    /// `_`.
    Any,
}

impl Atom {
    fn matches(self, c: char) -> bool {
        match self {
            Atom::Char(expected) => c == expected,
            Atom::Any => true,
        }
    }
}

/// A compiled LIKE pattern.
#[derive(Debug, Clone)]
pub(super) struct LikePattern {
    shape: Shape,
}

#[derive(Debug, Clone)]
enum Shape {
    /// No `%`: the text must be exactly as long as the segment.
    Exact(Vec<Atom>),
    /// `head%middle…%tail`, where `middle` leaves out empty segments
    /// (`%%` is `%`).
    Open {
        head: Vec<Atom>,
        middle: Vec<Finder>,
        tail: Vec<Atom>,
    },
}

impl LikePattern {
    /// Compiles `pattern`; the error says what is wrong with it.
    pub(super) fn compile(
        pattern: &str,
        escape: Option<char>,
    ) -> Result<LikePattern, &'static str> {
        let mut done = Vec::new();
        let mut segment = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if Some(c) == escape {
                let escaped = chars
                    .next()
                    .ok_or("the pattern ends with its escape character")?;
                segment.push(Atom::Char(escaped));
            } else if c == '%' {
                done.push(std::mem::take(&mut segment));
            } else if c == '_' {
                segment.push(Atom::Any);
            } else {
                segment.push(Atom::Char(c));
            }
        }
        let mut segments = done.into_iter();
        let shape = match segments.next() {
            None => Shape::Exact(segment),
            Some(head) => Shape::Open {
                head,
                middle: segments
                    .filter(|middle| !middle.is_empty())
                    .map(|middle| Finder::new(&middle))
                    .collect(),
                tail: segment,
            },
        };
        Ok(LikePattern { shape })
    }

    pub(super) fn matches(&self, text: &str) -> bool {
        match &self.shape {
            Shape::Exact(atoms) => strip_prefix(atoms, text) == Some(""),
            Shape::Open { head, middle, tail } => {
                let Some(rest) = strip_prefix(head, text) else {
                    return false;
                };
                // Matched before the middle, so head and tail cannot overlap.
                let Some(mut rest) = strip_suffix(tail, rest) else {
                    return false;
                };
                middle.iter().all(|finder| {
                    match finder.find_end(rest).and_then(|end| rest.get(end..)) {
                        Some(after) => {
                            rest = after;
                            true
                        }
                        None => false,
                    }
                })
            }
        }
    }
}

/// What is left of `text` after `atoms` match at its start.
fn strip_prefix<'t>(atoms: &[Atom], text: &'t str) -> Option<&'t str> {
    let mut chars = text.chars();
    for atom in atoms {
        if !atom.matches(chars.next()?) {
            return None;
        }
    }
    Some(chars.as_str())
}

/// What is left of `text` after `atoms` match at its end.
fn strip_suffix<'t>(atoms: &[Atom], text: &'t str) -> Option<&'t str> {
    let mut chars = text.chars();
    for atom in atoms.iter().rev() {
        if !atom.matches(chars.next_back()?) {
            return None;
        }
    }
    Some(chars.as_str())
}

/// Finds a middle segment's leftmost occurrence.
#[derive(Debug, Clone)]
enum Finder {
    /// No `_`: a plain substring.
    Literal(memmem::Finder<'static>),
    Wildcard(ShiftAnd),
}

impl Finder {
    fn new(atoms: &[Atom]) -> Finder {
        let literal: Option<String> = atoms
            .iter()
            .map(|atom| match atom {
                Atom::Char(c) => Some(*c),
                Atom::Any => None,
            })
            .collect();
        match literal {
            Some(literal) => Finder::Literal(memmem::Finder::new(&literal).into_owned()),
            None => Finder::Wildcard(ShiftAnd::new(atoms)),
        }
    }

    /// The byte offset just past the leftmost occurrence in `text`. Every
    /// occurrence has the same length, so the leftmost to start is the
    /// leftmost to end.
    fn find_end(&self, text: &str) -> Option<usize> {
        match self {
            // UTF-8 is self-synchronising: a match of whole characters
            // starts and ends on character boundaries.
            Finder::Literal(literal) => literal
                .find(text.as_bytes())
                .map(|at| at + literal.needle().len()),
            Finder::Wildcard(shift_and) => shift_and.find_end(text),
        }
    }
}

/// The shift-and (Baeza-Yates–Gonnet) automaton of a segment: bit `i` of
/// the state is set when the segment's first `i + 1` atoms match the text
/// just read, so a set top bit is a whole occurrence. `_` is a position
/// every character's mask includes.
#[derive(Debug, Clone)]
struct ShiftAnd {
    /// 64-bit words per state and per mask.
    words: usize,
    /// The bit, in the last word, of the segment's last position.
    last_bit: u64,
    /// The positions of `_`: the mask of a character the segment lacks.
    wildcard: Vec<u64>,
    /// The segment's distinct characters, sorted for binary search.
    chars: Vec<char>,
    /// For each ASCII character, 1 + its index in `chars`, or 0 if the
    /// segment lacks it: ASCII sorts first, so indices fit.
    ascii: [u8; 128],
    /// For each of `chars`, `words` words: its positions and `_`'s.
    masks: Vec<u64>,
}

impl ShiftAnd {
    fn new(atoms: &[Atom]) -> ShiftAnd {
        assert!(!atoms.is_empty(), "middle segments are never empty");
        let words = atoms.len().div_ceil(64);
        let positions = |keep: &dyn Fn(Atom) -> bool| {
            let mut mask = vec![0u64; words];
            for (i, atom) in atoms.iter().enumerate() {
                if keep(*atom) {
                    mask[i / 64] |= 1 << (i % 64);
                }
            }
            mask
        };
        let wildcard = positions(&|atom| atom == Atom::Any);
        let mut chars: Vec<char> = atoms
            .iter()
            .filter_map(|atom| match atom {
                Atom::Char(c) => Some(*c),
                Atom::Any => None,
            })
            .collect();
        chars.sort_unstable();
        chars.dedup();
        let mut ascii = [0u8; 128];
        for (i, c) in chars.iter().enumerate().filter(|(_, c)| c.is_ascii()) {
            ascii[*c as usize] = i as u8 + 1;
        }
        let masks = chars
            .iter()
            .flat_map(|&c| positions(&|atom| atom == Atom::Char(c) || atom == Atom::Any))
            .collect();
        ShiftAnd {
            words,
            last_bit: 1 << ((atoms.len() - 1) % 64),
            wildcard,
            chars,
            ascii,
            masks,
        }
    }

    fn mask(&self, c: char) -> &[u64] {
        let row = match self.ascii.get(c as usize) {
            Some(0) => None,
            Some(&row) => Some(usize::from(row) - 1),
            None => self.chars.binary_search(&c).ok(),
        };
        row.and_then(|i| self.masks.get(i * self.words..(i + 1) * self.words))
            .unwrap_or(&self.wildcard)
    }

    fn find_end(&self, text: &str) -> Option<usize> {
        if self.words == 1 {
            return self.find_end_in_one_word(text);
        }
        let mut state = vec![0u64; self.words];
        for (at, c) in text.char_indices() {
            // A new occurrence may start at every character.
            let mut carry = 1;
            for (word, mask) in state.iter_mut().zip(self.mask(c)) {
                let out = *word >> 63;
                *word = ((*word << 1) | carry) & mask;
                carry = out;
            }
            if state.last().is_some_and(|word| word & self.last_bit != 0) {
                return Some(at + c.len_utf8());
            }
        }
        None
    }

    /// `find_end` for a segment of at most 64 characters, the usual case,
    /// with the state in a register.
    fn find_end_in_one_word(&self, text: &str) -> Option<usize> {
        let mut state = 0u64;
        for (at, c) in text.char_indices() {
            let mask = self.mask(c).first().copied().unwrap_or(0);
            state = ((state << 1) | 1) & mask;
            if state & self.last_bit != 0 {
                return Some(at + c.len_utf8());
            }
        }
        None
    }
}
