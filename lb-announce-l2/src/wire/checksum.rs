//! The Internet checksum (RFC 1071) over the IPv6 pseudo-header (RFC 8200 §8.1), as ICMPv6
//! (RFC 4443 §2.3) uses it.

use std::net::Ipv6Addr;

/// One's-complement sum of `data` as big-endian 16-bit words, not yet folded. The sum is
/// taken eight bytes at a time as 64-bit words with the carry added back (end-around carry):
/// one's-complement addition is the same whatever the word width (RFC 1071 §2(B)), and it folds
/// to the same 16 bits.
fn sum(data: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let (s, carry) = acc.overflowing_add(v);
        acc = s + u64::from(carry);
    }
    let mut tail = 0u64;
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        tail += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        tail += u64::from(*last) << 8;
    }
    // Fold the 64-bit sum to 32 bits (its carries back in) before adding the small tail and
    // the pseudo-header terms, so no addition can overflow.
    let folded = (acc >> 32) + (acc & 0xffff_ffff);
    folded + tail
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The ICMPv6 checksum of `message` (with its checksum field as it stands) between `src` and
/// `dst`. Over a message whose checksum field is correct this yields 0.
pub fn icmpv6(src: &Ipv6Addr, dst: &Ipv6Addr, message: &[u8]) -> u16 {
    const NEXT_HEADER_ICMPV6: u64 = 58;
    let acc = sum(&src.octets())
        + sum(&dst.octets())
        + (message.len() as u64 >> 16)
        + (message.len() as u64 & 0xffff)
        + NEXT_HEADER_ICMPV6
        + sum(message);
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time sum against the definition: 16-bit words added one by one.
    #[test]
    fn the_wide_sum_folds_as_sixteen_bit_words_do() {
        let slow = |d: &[u8]| {
            let mut acc = 0u64;
            for w in d.chunks(2) {
                acc += u64::from(w[0]) << 8 | u64::from(*w.get(1).unwrap_or(&0));
            }
            fold(acc)
        };
        let mut data = Vec::new();
        for i in 0..200u32 {
            // All-ones words stress the carries.
            data.push(if i % 3 == 0 {
                0xff
            } else {
                (i * 37 % 251) as u8
            });
            assert_eq!(fold(sum(&data)), slow(&data), "{} bytes", data.len());
        }
        assert_eq!(fold(sum(&[0xff; 64])), slow(&[0xff; 64]));
    }

    #[test]
    fn odd_lengths_pad_with_a_zero_byte() {
        assert_eq!(fold(sum(&[0x12])), 0x1200);
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    #[test]
    fn rfc1071_example_sums_to_its_published_value() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        assert_eq!(
            fold(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])),
            0xddf2
        );
    }
}
