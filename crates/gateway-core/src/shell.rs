//! What an SSH exec command line would run, read with a POSIX shell parser (brush-parser)
//! the way the target's shell reads it, so that policy decides programs rather than strings:
//! `/bin/rm -r -f x`, `\rm -fr x` and `r''m x` all run `rm`, and `ls && id` runs `id` too.
//!
//! Each simple command yields its program (the basename of the command word after quote
//! removal) and its arguments. Whatever cannot be known before the line runs makes it
//! *opaque*, with a reason: command or process substitution anywhere, a variable, glob, tilde
//! or brace expansion as a program, `eval`/`exec`/`source`/`.`, function definitions,
//! here-documents, redirection to or from files other than `/dev/null`, arithmetic and
//! `[[ … ]]` commands, coprocesses, and lines that do not parse, are too long, or nest too
//! deeply to analyse. Programs that run other programs (`sh -c`, `env`, `sudo`, `xargs`,
//! `find -exec`) are simply programs: an allow-list that does not name them refuses them.

use brush_parser::ast::{
    Command, CommandPrefixOrSuffixItem, CompoundCommand, CompoundList, IoFileRedirectTarget,
    IoRedirect, Pipeline, Program, SimpleCommand, Word,
};
use brush_parser::word::WordPiece;
use brush_parser::{ParserOptions, parse_tokens, tokenize_str_with_options};

/// Longest line analysed; longer ones are opaque.
pub const MAX_LINE: usize = 64 * 1024;
/// Deepest nesting analysed (brackets, substitutions, compound commands); deeper is opaque.
pub const MAX_DEPTH: usize = 64;

/// What an exec command line runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShellLine {
    /// Each simple command in order: program basename and arguments (quotes removed).
    pub commands: Vec<(String, Vec<String>)>,
    /// Every program's basename, in order of appearance, once each.
    pub programs: Vec<String>,
    /// Why the line cannot be fully known before it runs; empty when it can.
    pub opaque: Vec<String>,
}

impl ShellLine {
    fn opaque(&mut self, why: &str) {
        if !self.opaque.iter().any(|o| o == why) {
            self.opaque.push(why.to_string());
        }
    }
}

/// Analyse one command line.
pub fn analyse(line: &str) -> ShellLine {
    let mut out = ShellLine::default();
    if line.len() > MAX_LINE {
        out.opaque("too long to analyse");
        return out;
    }
    if nesting(line) > MAX_DEPTH {
        out.opaque("too deeply nested to analyse");
        return out;
    }
    // Opaque whatever else the line holds; and not handed to the parser, whose tokenizer
    // does not terminate on some unbalanced here-documents (`$( << | $(`).
    if line.contains("<<") {
        out.opaque("here-document");
        return out;
    }
    let options = ParserOptions {
        posix_mode: true,
        ..ParserOptions::default()
    };
    let parsed = tokenize_str_with_options(line, &options.tokenizer_options())
        .map_err(|_| ())
        .and_then(|tokens| parse_tokens(&tokens, &options).map_err(|_| ()));
    match parsed {
        Ok(program) => Walker {
            out: &mut out,
            options: &options,
        }
        .program(&program),
        Err(()) => out.opaque("syntax error"),
    }
    for (program, _) in &out.commands {
        if !out.programs.contains(program) {
            out.programs.push(program.clone());
        }
    }
    out
}

/// An upper bound on how deeply `line` nests: brackets, substitutions and the keywords that
/// open compound commands, counted without parsing. It bounds the parser's recursion (and
/// this module's), so no line can exhaust the stack.
fn nesting(line: &str) -> usize {
    let (mut depth, mut brackets) = (0usize, 0usize);
    for c in line.chars() {
        match c {
            '(' | '{' | '[' | '`' => {
                depth += 1;
                brackets = brackets.max(depth);
            }
            ')' | '}' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let (mut depth, mut keywords) = (0usize, 0usize);
    for word in line.split(|c: char| c.is_whitespace() || ";&|()".contains(c)) {
        match word {
            "if" | "while" | "until" | "for" | "case" | "select" | "function" => {
                depth += 1;
                keywords = keywords.max(depth);
            }
            "fi" | "done" | "esac" => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    brackets + keywords
}

struct Walker<'a> {
    out: &'a mut ShellLine,
    options: &'a ParserOptions,
}

impl Walker<'_> {
    fn program(&mut self, p: &Program) {
        for cc in &p.complete_commands {
            self.list(cc);
        }
    }

    fn list(&mut self, list: &CompoundList) {
        for item in &list.0 {
            let and_or = &item.0;
            self.pipeline(&and_or.first);
            for next in &and_or.additional {
                match next {
                    brush_parser::ast::AndOr::And(p) | brush_parser::ast::AndOr::Or(p) => {
                        self.pipeline(p)
                    }
                }
            }
        }
    }

    fn pipeline(&mut self, p: &Pipeline) {
        for c in &p.seq {
            self.command(c);
        }
    }

    fn command(&mut self, c: &Command) {
        match c {
            Command::Simple(s) => self.simple(s),
            Command::Compound(cc, redirects) => {
                self.compound(cc);
                if let Some(r) = redirects {
                    for io in &r.0 {
                        self.redirect(io);
                    }
                }
            }
            Command::Function(_) => self.out.opaque("function definition"),
            Command::ExtendedTest(..) => self.out.opaque("[[ ]] expression"),
        }
    }

    fn compound(&mut self, c: &CompoundCommand) {
        match c {
            CompoundCommand::BraceGroup(b) => self.list(&b.list),
            CompoundCommand::Subshell(s) => self.list(&s.list),
            CompoundCommand::ForClause(f) => {
                for w in f.values.iter().flatten() {
                    self.argument(w);
                }
                self.list(&f.body.list);
            }
            CompoundCommand::CaseClause(c) => {
                self.argument(&c.value);
                for item in &c.cases {
                    for p in &item.patterns {
                        self.argument(p);
                    }
                    if let Some(body) = &item.cmd {
                        self.list(body);
                    }
                }
            }
            CompoundCommand::IfClause(i) => {
                self.list(&i.condition);
                self.list(&i.then);
                for e in i.elses.iter().flatten() {
                    if let Some(c) = &e.condition {
                        self.list(c);
                    }
                    self.list(&e.body);
                }
            }
            CompoundCommand::WhileClause(w) | CompoundCommand::UntilClause(w) => {
                self.list(&w.0);
                self.list(&w.1.list);
            }
            CompoundCommand::Arithmetic(_) | CompoundCommand::ArithmeticForClause(_) => {
                self.out.opaque("arithmetic command")
            }
            CompoundCommand::Coprocess(_) => self.out.opaque("coprocess"),
        }
    }

    fn simple(&mut self, s: &SimpleCommand) {
        for item in s.prefix.iter().flat_map(|p| &p.0) {
            self.item(item, None);
        }
        let mut args = Vec::new();
        let program = match &s.word_or_name {
            Some(w) => self.program_word(w),
            None => None,
        };
        for item in s.suffix.iter().flat_map(|p| &p.0) {
            self.item(item, Some(&mut args));
        }
        if let Some(program) = program {
            if matches!(program.as_str(), "eval" | "exec" | "source" | ".") {
                self.out
                    .opaque(&format!("`{program}` runs code not in the line"));
            }
            self.out.commands.push((program, args));
        }
    }

    fn item(&mut self, item: &CommandPrefixOrSuffixItem, args: Option<&mut Vec<String>>) {
        match item {
            CommandPrefixOrSuffixItem::IoRedirect(io) => self.redirect(io),
            CommandPrefixOrSuffixItem::Word(w) => {
                let text = self.argument(w);
                if let Some(args) = args {
                    args.push(text);
                }
            }
            CommandPrefixOrSuffixItem::AssignmentWord(_, w) => {
                let text = self.argument(w);
                if let Some(args) = args {
                    // `declare x=1`: an argument like any other.
                    args.push(text);
                }
            }
            CommandPrefixOrSuffixItem::ProcessSubstitution(..) => {
                self.out.opaque("process substitution")
            }
        }
    }

    fn redirect(&mut self, io: &IoRedirect) {
        match io {
            IoRedirect::File(_, _, target) => match target {
                IoFileRedirectTarget::Filename(w) => self.file(w),
                IoFileRedirectTarget::Fd(_) => {}
                IoFileRedirectTarget::Duplicate(w) => {
                    let t = self.argument(w);
                    if !(t == "-" || t.bytes().all(|b| b.is_ascii_digit())) {
                        self.out.opaque("redirection to a file");
                    }
                }
                IoFileRedirectTarget::ProcessSubstitution(..) => {
                    self.out.opaque("process substitution")
                }
            },
            IoRedirect::OutputAndError(w, _) => self.file(w),
            IoRedirect::HereDocument(..) | IoRedirect::HereString(..) => {
                self.out.opaque("here-document")
            }
        }
    }

    fn file(&mut self, w: &Word) {
        if self.argument(w) != "/dev/null" {
            self.out.opaque("redirection to a file");
        }
    }

    /// An argument's text with quotes removed when it is static; as written otherwise. A
    /// substitution anywhere in it makes the line opaque.
    fn argument(&mut self, w: &Word) -> String {
        if has_substitution(&w.value) {
            self.out.opaque("command substitution");
        }
        match literal(&w.value, self.options) {
            Some(Literal { text, .. }) => text,
            None => w.value.clone(),
        }
    }

    /// The basename of a command word, or `None` (and opaque) when it is not a fixed name.
    fn program_word(&mut self, w: &Word) -> Option<String> {
        if has_substitution(&w.value) {
            self.out.opaque("command substitution");
            return None;
        }
        match literal(&w.value, self.options) {
            Some(Literal {
                text,
                pattern: false,
            }) if !text.is_empty() => {
                let base = text.rsplit('/').next().unwrap_or(&text);
                if base.is_empty() {
                    self.out.opaque("a directory as the program");
                    return None;
                }
                Some(base.to_string())
            }
            Some(_) => {
                self.out.opaque("glob or brace expansion as the program");
                None
            }
            None => {
                self.out.opaque("variable as the program");
                None
            }
        }
    }
}

/// Whether a word's raw text substitutes a command: `$(…)`, backquotes, `<(…)`, `>(…)`.
/// Checked on the raw text, quotes included, so it errs towards opaque.
fn has_substitution(raw: &str) -> bool {
    raw.contains("$(") || raw.contains('`') || raw.contains("<(") || raw.contains(">(")
}

/// A word with its quotes removed, when it expands to a fixed text.
struct Literal {
    text: String,
    /// Unquoted glob or brace characters: the shell may expand it into other words.
    pattern: bool,
}

fn literal(raw: &str, options: &ParserOptions) -> Option<Literal> {
    let pieces = brush_parser::word::parse(raw, options).ok()?;
    let mut out = Literal {
        text: String::new(),
        pattern: false,
    };
    for p in &pieces {
        match &p.piece {
            WordPiece::Text(t) => {
                out.pattern |= t.contains(['*', '?', '[', '{']);
                out.text.push_str(t);
            }
            WordPiece::SingleQuotedText(t) => out.text.push_str(t),
            WordPiece::EscapeSequence(e) => out.text.push_str(e.strip_prefix('\\').unwrap_or(e)),
            WordPiece::DoubleQuotedSequence(inner)
            | WordPiece::GettextDoubleQuotedSequence(inner) => {
                for i in inner {
                    match &i.piece {
                        WordPiece::Text(t) => out.text.push_str(t),
                        WordPiece::EscapeSequence(e) => {
                            out.text.push_str(e.strip_prefix('\\').unwrap_or(e))
                        }
                        _ => return None,
                    }
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
