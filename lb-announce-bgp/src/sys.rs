//! Socket options std and tokio do not wrap: TCP-MD5 signatures (RFC 2385), the outgoing TTL /
//! hop limit of both families and the minimum TTL accepted (GTSM, RFC 5082). The only module of
//! this crate with `unsafe`.
#![allow(unsafe_code)]

use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;

/// Linux `struct tcp_md5sig` (include/uapi/linux/tcp.h), 216 bytes on x86_64.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; 80],
}

/// The longest key the kernel accepts (TCP_MD5SIG_MAXKEYLEN).
pub const MD5_MAX_KEY: usize = 80;

/// Signs every segment to and from `peer` on this socket with `key`; must be set before
/// connecting (or on a listening socket for passive peers).
pub fn set_tcp_md5(fd: RawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MD5_MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP-MD5 keys are at most 80 bytes",
        ));
    }
    // SAFETY: all-zero is a valid value for this plain C struct.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    match peer {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe {
                &mut *(&mut sig.addr as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
        }
        IpAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe {
                &mut *(&mut sig.addr as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
        }
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: `sig` is a valid tcp_md5sig and the length passed is its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&sig as *const TcpMd5Sig).cast(),
            size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value is a c_int that lives across the call, with its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The TTL (IPv4) or hop limit (IPv6) of the packets this socket sends.
pub fn set_ttl(fd: RawFd, ipv6: bool, ttl: u8) -> io::Result<()> {
    if ipv6 {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, ttl.into())
    } else {
        set_int(fd, libc::IPPROTO_IP, libc::IP_TTL, ttl.into())
    }
}

/// Drops received packets whose TTL / hop limit is below `min` (GTSM, RFC 5082 §3).
pub fn set_min_ttl(fd: RawFd, ipv6: bool, min: u8) -> io::Result<()> {
    if ipv6 {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, min.into())
    } else {
        set_int(fd, libc::IPPROTO_IP, libc::IP_MINTTL, min.into())
    }
}

/// The IPv4 minimum TTL set on a socket.
#[cfg(test)]
pub fn get_min_ttl(fd: RawFd) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MINTTL,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_struct_has_the_kernels_size() {
        assert_eq!(size_of::<TcpMd5Sig>(), 216);
    }

    #[test]
    fn ttl_and_minimum_ttl_are_set_on_both_families() {
        for v6 in [false, true] {
            let s = if v6 {
                std::net::UdpSocket::bind("[::1]:0")
            } else {
                std::net::UdpSocket::bind("127.0.0.1:0")
            };
            let Ok(s) = s else { continue };
            use std::os::fd::AsRawFd;
            set_ttl(s.as_raw_fd(), v6, 255).unwrap();
            set_min_ttl(s.as_raw_fd(), v6, 254).unwrap();
            if !v6 {
                assert_eq!(s.ttl().unwrap(), 255);
            }
        }
    }

    #[test]
    fn overlong_keys_are_refused_before_the_kernel_sees_them() {
        let e = set_tcp_md5(-1, "192.0.2.1".parse().unwrap(), &[0; 81]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
