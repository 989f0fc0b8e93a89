//! One directive under conversion: where it is, and the errors and argument checks that name
//! its server block, line, directive and option.

use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use super::Role;
use crate::config::parse_go_duration;
use crate::corefile::CorefileError;
use crate::corefile::parser::Directive;
use crate::corefile::zones::Key;

pub(super) struct Ctx<'a> {
    /// The server block's label (its keys), e.g. `.:53`.
    pub(super) block: &'a str,
    pub(super) d: &'a Directive,
    pub(super) role: Role,
    pub(super) keys: &'a [Key],
}

impl Ctx<'_> {
    /// `o` is the directive itself or one of its options.
    fn option_of(&self, o: &Directive) -> Option<String> {
        (!std::ptr::eq(o, self.d)).then(|| o.name.clone())
    }

    fn unsupported_at(&self, o: &Directive, reason: String) -> CorefileError {
        CorefileError::Unsupported {
            at: o.at.clone(),
            block: self.block.to_string(),
            directive: self.d.name.clone(),
            option: self.option_of(o),
            reason,
        }
    }

    fn invalid_at(&self, o: &Directive, message: String) -> CorefileError {
        CorefileError::Invalid {
            at: o.at.clone(),
            block: self.block.to_string(),
            directive: self.d.name.clone(),
            option: self.option_of(o),
            message,
        }
    }

    pub(super) fn unsupported(&self, reason: String) -> CorefileError {
        self.unsupported_at(self.d, reason)
    }

    pub(super) fn unsupported_opt(&self, o: &Directive, reason: String) -> CorefileError {
        self.unsupported_at(o, reason)
    }

    pub(super) fn invalid(&self, message: String) -> CorefileError {
        self.invalid_at(self.d, message)
    }

    pub(super) fn invalid_opt(&self, o: &Directive, message: String) -> CorefileError {
        self.invalid_at(o, message)
    }

    pub(super) fn unknown_option(&self, o: &Directive) -> CorefileError {
        self.unsupported_at(
            o,
            format!(
                "`{}` has no option `{}` that clusterdns knows how to convert",
                self.d.name, o.name
            ),
        )
    }

    pub(super) fn max_args(&self, n: usize) -> Result<(), CorefileError> {
        if self.d.args.len() > n {
            return Err(self.invalid(format!(
                "takes at most {n} argument(s), got {}",
                self.d.args.len()
            )));
        }
        Ok(())
    }

    pub(super) fn no_block(&self) -> Result<(), CorefileError> {
        if let Some(o) = self.d.options().first() {
            return Err(self.unknown_option(o));
        }
        Ok(())
    }

    /// The one argument of the directive or of one of its options.
    pub(super) fn one_arg<'d>(&self, o: &'d Directive) -> Result<&'d String, CorefileError> {
        match o.args.as_slice() {
            [v] => Ok(v),
            _ => Err(self.invalid_at(
                o,
                format!("takes exactly one argument, got {}", o.args.len()),
            )),
        }
    }

    pub(super) fn opt_no_args(&self, o: &Directive) -> Result<(), CorefileError> {
        if !o.args.is_empty() {
            return Err(self.invalid_opt(o, "takes no arguments".into()));
        }
        Ok(())
    }

    /// A number of the directive or one of its options, within `range`; `what` says what it
    /// must be, for the error (`a TTL from 0 to 3600`).
    pub(super) fn number<T: FromStr + PartialOrd>(
        &self,
        o: &Directive,
        v: &str,
        range: RangeInclusive<T>,
        what: &str,
    ) -> Result<T, CorefileError> {
        v.parse()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| self.invalid_at(o, format!("{v:?} is not {what}")))
    }

    /// A duration as CoreDNS reads it (Go's syntax).
    pub(super) fn duration(&self, o: &Directive, v: &str) -> Result<Duration, CorefileError> {
        parse_go_duration(v).map_err(|e| self.invalid_opt(o, e))
    }
}
