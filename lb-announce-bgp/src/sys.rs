//! Socket options std and tokio do not wrap: TCP-MD5 signatures (RFC 2385), the outgoing TTL /
//! hop limit of both families and the minimum TTL accepted (GTSM, RFC 5082). The only module of
//! this crate with `unsafe`.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, SocketAddr};
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

/// Asks the kernel to report each received datagram's TTL / hop limit ([`recv_with_ttl`]).
pub fn set_recv_ttl(fd: RawFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)
    } else {
        set_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)
    }
}

/// Receives one datagram without blocking: its length, its sender and the TTL (IPv4) or hop
/// limit (IPv6) it arrived with, if the kernel reported one ([`set_recv_ttl`]). UDP's
/// `IP_MINTTL` is not enforced by Linux, so BFD checks the TTL itself (RFC 5881 §5).
pub fn recv_with_ttl(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` points to memory of the length given, alive for the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ttl = None;
    // SAFETY: the kernel filled `msg_controllen` bytes of `control` with cmsghdrs; the CMSG
    // macros walk them within that length, and each data read is of the int the kernel wrote.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let (level, kind) = ((*c).cmsg_level, (*c).cmsg_type);
            if (level == libc::IPPROTO_IP && kind == libc::IP_TTL)
                || (level == libc::IPPROTO_IPV6 && kind == libc::IPV6_HOPLIMIT)
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                ttl = u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let from = match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a =
                unsafe { &*(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            SocketAddr::new(
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(),
                u16::from_be(a.sin_port),
            )
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a =
                unsafe { &*(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            SocketAddr::new(
                std::net::Ipv6Addr::from(a.sin6_addr.s6_addr).into(),
                u16::from_be(a.sin6_port),
            )
        }
        f => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("datagram from address family {f}"),
            ));
        }
    };
    Ok((n as usize, from, ttl))
}

/// The index of the interface named `name` (in the calling thread's network namespace).
pub fn interface_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: `c` is a NUL-terminated string alive for the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}

/// Lets only the ICMPv6 types `pass` reach a raw ICMPv6 socket (RFC 3542 §3.2 ICMP6_FILTER;
/// on Linux a set bit blocks its type).
pub fn icmp6_filter(fd: RawFd, pass: &[u8]) -> io::Result<()> {
    /// Linux's ICMPV6_FILTER option at level SOL_ICMPV6 (include/uapi/linux/icmpv6.h).
    const ICMPV6_FILTER: libc::c_int = 1;
    let mut blocked = [u32::MAX; 8];
    for t in pass {
        blocked[usize::from(t >> 5)] &= !(1u32 << (t & 31));
    }
    // SAFETY: the option value is the 32-byte filter, alive across the call, with its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_ICMPV6,
            ICMPV6_FILTER,
            blocked.as_ptr().cast(),
            size_of_val(&blocked) as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Every address of every interface (of the calling thread's network namespace), with the
/// interface's name.
pub fn interface_addresses() -> io::Result<Vec<(String, IpAddr)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string of the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr points to a sockaddr whose family says which one it is.
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let a = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                    Some(IpAddr::from(std::net::Ipv4Addr::from(u32::from_be(
                        a.sin_addr.s_addr,
                    ))))
                }
                libc::AF_INET6 => {
                    let a = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                    Some(IpAddr::from(std::net::Ipv6Addr::from(a.sin6_addr.s6_addr)))
                }
                _ => None,
            }
        };
        if let Some(a) = addr {
            out.push((name, a));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
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
    fn a_datagrams_ttl_and_hop_limit_are_read() {
        use std::os::fd::AsRawFd;
        for (v6, ttl) in [(false, 255u8), (false, 7), (true, 255), (true, 9)] {
            let (r, s) = if v6 {
                (
                    std::net::UdpSocket::bind("[::1]:0"),
                    std::net::UdpSocket::bind("[::1]:0"),
                )
            } else {
                (
                    std::net::UdpSocket::bind("127.0.0.1:0"),
                    std::net::UdpSocket::bind("127.0.0.1:0"),
                )
            };
            let (Ok(r), Ok(s)) = (r, s) else { continue };
            set_recv_ttl(r.as_raw_fd(), v6).unwrap();
            set_ttl(s.as_raw_fd(), v6, ttl).unwrap();
            s.send_to(b"bfd", r.local_addr().unwrap()).unwrap();
            let mut buf = [0u8; 16];
            let mut got = None;
            for _ in 0..100 {
                match recv_with_ttl(r.as_raw_fd(), &mut buf) {
                    Ok(x) => {
                        got = Some(x);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(5))
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            let (n, from, seen) = got.expect("the datagram");
            assert_eq!(&buf[..n], b"bfd");
            assert_eq!(from, s.local_addr().unwrap());
            assert_eq!(seen, Some(ttl), "v6 {v6}");
        }
    }

    #[test]
    fn the_loopback_interface_has_its_addresses() {
        let a = interface_addresses().unwrap();
        assert!(
            a.iter()
                .any(|(n, ip)| n == "lo" && *ip == IpAddr::from([127, 0, 0, 1])),
            "{a:?}"
        );
    }

    #[test]
    fn overlong_keys_are_refused_before_the_kernel_sees_them() {
        let e = set_tcp_md5(-1, "192.0.2.1".parse().unwrap(), &[0; 81]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
