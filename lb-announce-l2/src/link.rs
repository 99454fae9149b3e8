//! AF_PACKET sockets on tokio: the only module of this crate with `unsafe`.
//!
//! One socket per (interface, EtherType): ARP, and IPv6 narrowed by a classic BPF filter to
//! ICMPv6 Neighbor Solicitations and Advertisements so that the responder never sees ordinary
//! IPv6 traffic. Sending needs only CAP_NET_RAW.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

use crate::wire::Mac;

/// The ARP ethertype.
pub const ETH_P_ARP: u16 = 0x0806;
/// The IPv6 ethertype.
pub const ETH_P_IPV6: u16 = 0x86dd;

/// A raw socket bound to one interface and one EtherType.
#[derive(Debug)]
pub struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: i32,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn sockaddr(ifindex: i32, protocol: u16) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value for every field.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex;
    sll
}

impl PacketSocket {
    /// Opens a non-blocking packet socket for `protocol` frames on interface `ifindex`.
    /// Must be called within a tokio runtime.
    pub fn open(ifindex: u32, protocol: u16) -> io::Result<PacketSocket> {
        let ifindex =
            i32::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: plain syscall; the result is checked and owned right away.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(protocol.to_be()),
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sll = sockaddr(ifindex, protocol);
        // SAFETY: `sll` is a valid sockaddr_ll and the length passed is its size.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        // SAFETY: an OwnedFd stays open and keeps its descriptor until the AsyncFd drops it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        let s = PacketSocket { fd, ifindex };
        if protocol == ETH_P_IPV6 {
            s.attach_ndisc_filter()?;
        }
        Ok(s)
    }

    /// Keeps only ICMPv6 (next header 58, no extension headers) of type 135 or 136.
    fn attach_ndisc_filter(&self) -> io::Result<()> {
        const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
        const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
        const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
        let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        let program = [
            ins(LD_B_ABS, 0, 0, 14 + 6),   // 0: IPv6 next header
            ins(JEQ_K, 0, 4, 58),          // 1: ICMPv6? else drop (6)
            ins(LD_B_ABS, 0, 0, 14 + 40),  // 2: ICMPv6 type
            ins(JEQ_K, 1, 0, 135),         // 3: NS -> accept (5)
            ins(JEQ_K, 0, 1, 136),         // 4: NA -> accept (5), else drop (6)
            ins(RET_K, 0, 0, 0x0004_0000), // 5: accept
            ins(RET_K, 0, 0, 0),           // 6: drop
        ];
        let prog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies it.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&prog as *const libc::sock_fprog).cast(),
                size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        })
        .map(|_| ())
    }

    /// Receives every multicast frame of the link (on) or only the groups joined (off): one
    /// membership in place of thousands, whose kernel lists are searched linearly on each join.
    pub fn all_multicast(&self, on: bool) -> io::Result<()> {
        let option = if on {
            libc::PACKET_ADD_MEMBERSHIP
        } else {
            libc::PACKET_DROP_MEMBERSHIP
        };
        self.mreq(libc::PACKET_MR_ALLMULTI, None, option)
    }

    fn membership(&self, mac: Mac, option: libc::c_int) -> io::Result<()> {
        self.mreq(libc::PACKET_MR_MULTICAST, Some(mac), option)
    }

    fn mreq(&self, kind: libc::c_int, mac: Option<Mac>, option: libc::c_int) -> io::Result<()> {
        // SAFETY: packet_mreq is plain data; all-zero is valid.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = self.ifindex;
        mreq.mr_type = kind as u16;
        if let Some(mac) = mac {
            mreq.mr_alen = 6;
            mreq.mr_address[..6].copy_from_slice(&mac.octets());
        }
        // SAFETY: `mreq` is a valid packet_mreq and the length passed is its size.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                option,
                (&mreq as *const libc::packet_mreq).cast(),
                size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        })
        .map(|_| ())
    }

    /// Receives frames sent to this multicast MAC (a solicited-node group) from now on.
    pub fn join(&self, mac: Mac) -> io::Result<()> {
        self.membership(mac, libc::PACKET_ADD_MEMBERSHIP)
    }

    /// Stops receiving frames sent to multicast `mac`.
    pub fn leave(&self, mac: Mac) -> io::Result<()> {
        self.membership(mac, libc::PACKET_DROP_MEMBERSHIP)
    }

    /// The next frame received from the wire (frames this host sends are skipped).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let got = guard.try_io(|fd| {
                let mut from = sockaddr(0, 0);
                let mut from_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: `buf` is valid for `buf.len()` bytes and `from` for `from_len`.
                let n = check(unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut from as *mut libc::sockaddr_ll).cast(),
                        &mut from_len,
                    ) as libc::c_int
                })?;
                Ok((n as usize, from.sll_pkttype))
            });
            match got {
                Ok(Ok((_, pkttype))) if pkttype == libc::PACKET_OUTGOING => continue,
                Ok(Ok((n, _))) => return Ok(n),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one frame. A full socket buffer is an error the caller counts; nothing blocks.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is valid for `frame.len()` bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
