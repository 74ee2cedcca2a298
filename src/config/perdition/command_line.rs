//! Perdition's command line: `--name VALUE`, `--name=VALUE`, `-X VALUE` or `-XVALUE`.

use super::error::PerditionError;
use super::options::PerditionOption;

/// `(option, value)` pairs from the command line; flags get the value "yes".
pub fn parse_args(args: &[String]) -> Result<Vec<(PerditionOption, String)>, PerditionError> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (option, inline) = named_option(arg)?;
        let value = match (option.takes_value(), inline) {
            (true, Some(v)) => v,
            (true, None) => it
                .next()
                .cloned()
                .ok_or(PerditionError::NeedsValue(option.name()))?,
            (false, None) => "yes".to_string(),
            (false, Some(_)) => return Err(PerditionError::TakesNoValue(option.name())),
        };
        out.push((option, value));
    }
    Ok(out)
}

/// The option `arg` names, and the value written in the same argument, if any.
fn named_option(arg: &str) -> Result<(PerditionOption, Option<String>), PerditionError> {
    if let Some(long) = arg.strip_prefix("--") {
        let (name, value) = match long.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (long, None),
        };
        return Ok((PerditionOption::from_name(name)?, value));
    }
    let Some(short) = arg.strip_prefix('-').filter(|s| !s.is_empty()) else {
        return Err(PerditionError::UnexpectedArgument(arg.to_string()));
    };
    let letter = short.chars().next().unwrap_or('-');
    let option =
        PerditionOption::from_letter(letter).ok_or(PerditionError::UnknownLetter(letter))?;
    // A refused option is refused by its letter too.
    let option = PerditionOption::from_name(option.name())?;
    let rest = &short[letter.len_utf8()..];
    Ok((option, (!rest.is_empty()).then(|| rest.to_string())))
}
