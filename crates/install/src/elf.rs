//! Just enough of ELF to find one section's bytes in a shared library: 64-bit little-endian
//! objects (x86_64 and aarch64 Linux, the platforms backstop ships for). Every offset read from
//! the file is bounds-checked; a malformed file is an error, never a panic.

use eyre::{bail, eyre, Result};

const SHT_NOBITS: u32 = 8;

fn bytes(data: &[u8], offset: u64, len: u64) -> Result<&[u8]> {
    let start = usize::try_from(offset)?;
    let end = start.checked_add(usize::try_from(len)?).ok_or_else(|| eyre!("ELF offset overflows"))?;
    data.get(start..end)
        .ok_or_else(|| eyre!("ELF reference {start}..{end} is past the end of the file ({} bytes)", data.len()))
}

fn u16_at(data: &[u8], offset: u64) -> Result<u16> {
    Ok(u16::from_le_bytes(bytes(data, offset, 2)?.try_into()?))
}

fn u32_at(data: &[u8], offset: u64) -> Result<u32> {
    Ok(u32::from_le_bytes(bytes(data, offset, 4)?.try_into()?))
}

fn u64_at(data: &[u8], offset: u64) -> Result<u64> {
    Ok(u64::from_le_bytes(bytes(data, offset, 8)?.try_into()?))
}

/// The contents of the section called `name`, or None when the object has no such section.
pub fn section<'a>(data: &'a [u8], name: &str) -> Result<Option<&'a [u8]>> {
    if data.get(..4) != Some(b"\x7fELF".as_slice()) {
        bail!("not an ELF file");
    }
    if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        bail!("not a 64-bit little-endian ELF file");
    }
    let shoff = u64_at(data, 0x28)?;
    let shentsize = u64::from(u16_at(data, 0x3a)?);
    let shnum = u64::from(u16_at(data, 0x3c)?);
    let shstrndx = u64::from(u16_at(data, 0x3e)?);
    if shentsize < 64 {
        bail!("ELF section header size {shentsize} is too small");
    }
    let header = |index: u64| -> Result<&[u8]> {
        let at = index.checked_mul(shentsize).and_then(|o| o.checked_add(shoff));
        bytes(data, at.ok_or_else(|| eyre!("ELF section header offset overflows"))?, 64)
    };
    if shstrndx >= shnum {
        bail!("ELF section name table index {shstrndx} out of range ({shnum} sections)");
    }
    let strtab = header(shstrndx)?;
    let names = bytes(data, u64_at(strtab, 24)?, u64_at(strtab, 32)?)?;
    for index in 0..shnum {
        let sh = header(index)?;
        let name_at = usize::try_from(u32_at(sh, 0)?)?;
        let raw = names.get(name_at..).ok_or_else(|| eyre!("ELF section name offset {name_at} out of range"))?;
        let end = raw.iter().position(|&b| b == 0).ok_or_else(|| eyre!("ELF section name is not terminated"))?;
        if &raw[..end] != name.as_bytes() {
            continue;
        }
        if u32_at(sh, 4)? == SHT_NOBITS {
            return Ok(Some(&[]));
        }
        return bytes(data, u64_at(sh, 24)?, u64_at(sh, 32)?).map(Some);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 object: a null section, `.shstrtab` and one named section holding `payload`.
    fn object(section_name: &str, payload: &[u8]) -> Vec<u8> {
        let mut names = b"\0.shstrtab\0".to_vec();
        let name_at = names.len() as u32;
        names.extend_from_slice(section_name.as_bytes());
        names.push(0);
        let mut data = vec![0u8; 64];
        data[..4].copy_from_slice(b"\x7fELF");
        data[4] = 2;
        data[5] = 1;
        let names_at = data.len() as u64;
        data.extend_from_slice(&names);
        let payload_at = data.len() as u64;
        data.extend_from_slice(payload);
        let shoff = data.len() as u64;
        let mut header = |name: u32, kind: u32, offset: u64, size: u64| {
            let mut sh = [0u8; 64];
            sh[0..4].copy_from_slice(&name.to_le_bytes());
            sh[4..8].copy_from_slice(&kind.to_le_bytes());
            sh[24..32].copy_from_slice(&offset.to_le_bytes());
            sh[32..40].copy_from_slice(&size.to_le_bytes());
            data.extend_from_slice(&sh);
        };
        header(0, 0, 0, 0);
        header(1, 3, names_at, names.len() as u64);
        header(name_at, 1, payload_at, payload.len() as u64);
        data[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        data[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        data[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        data[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        data
    }

    #[test]
    fn finds_the_named_section() {
        let data = object(".pgrxsc", b"entities");
        assert_eq!(section(&data, ".pgrxsc").unwrap(), Some(b"entities".as_slice()));
        assert_eq!(section(&data, ".pgrx_schema").unwrap(), None);
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        assert!(section(b"MZ\0\0", ".pgrxsc").is_err());
        let data = object(".pgrxsc", b"entities");
        for cut in [10, 0x40, data.len() - 100, data.len() - 1] {
            assert!(section(&data[..cut], ".pgrxsc").is_err(), "cut at {cut}");
        }
        let mut bad = data.clone();
        let shoff = u64::from_le_bytes(bad[0x28..0x30].try_into().unwrap()) as usize;
        // The payload section's size points far past the end.
        bad[shoff + 128 + 32..shoff + 128 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(section(&bad, ".pgrxsc").is_err());
    }
}
