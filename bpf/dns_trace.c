// dns_trace.c: a socket filter that reports every DNS packet it sees, once per
// network namespace, with the latency of each response at that vantage point.
//
// Compiled once (by bcc, or ahead of time into a CO-RE object: below) and
// attached in every namespace through a tiny per-namespace dispatcher (built
// in user space from raw instructions) that writes the namespace's capture id
// to skb->cb[0] and tail-calls `dns_trace` through the `progs` array. The
// program only extracts; decoding names and answers is left to user space
// (dnscorrelate/sources/).
//
// It always returns 0, so no packet is ever queued on the capture socket:
// events leave through the `events` ring buffer only. Every reason an event is
// not emitted is counted in `counters` (see COUNTER_* below), so nothing is
// lost silently.

// One source, two builds (bpf/README.md): bcc compiles it at run time for the local capture, with the
// kernel's headers; `bpf/build.sh` compiles it once with clang into a CO-RE object (-DDNSC_LIBBPF) that
// libbpf loads in the node agent, with no headers on the node. The two differ only in how maps are
// declared and reached: the small accessors below, nothing of the logic.
#ifdef DNSC_LIBBPF
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
#else
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/udp.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/icmp.h>
#endif

#ifndef PAYLOAD_MAX
#define PAYLOAD_MAX 512
#endif
#define DNS_HEADER_LEN 12
#define MAX_IPV6_EXT 6

// Counters, indexed in the per-CPU `counters` array.
#define COUNTER_EVENTS 0        // events written to the ring buffer
#define COUNTER_LOST 1          // ring buffer full: event lost
#define COUNTER_NON_DNS 2       // IP packet, not on a DNS port
#define COUNTER_NON_IP 3        // not IPv4/IPv6 (ARP, ...)
#define COUNTER_TRUNCATED_HDR 4 // on a DNS port but too short for a DNS header
#define COUNTER_TCP_NO_PAYLOAD 5 // TCP segment on a DNS port with no data (SYN, ACK, FIN)
#define COUNTER_MAX 8

// Values of `kind`.
#define KIND_DNS 0         // a UDP datagram or TCP segment carrying DNS
#define KIND_ICMP_ERROR 1  // an ICMP error quoting a DNS packet (port unreachable, ...)
#define KIND_TCP_CONTROL 2 // a TCP SYN, SYN-ACK or RST on a DNS port: a connection tried, accepted or refused
#define TCP_SYN 0x02
#define TCP_RST 0x04

struct event {
    u64 ts_ns;          // bpf_ktime_get_boot_ns()
    u64 latency_ns;     // responses: time since this vantage first saw the query; else 0
    u32 capture_id;     // the namespace, from skb->cb[0]
    u32 ifindex;
    u32 skb_len;
    u32 tcp_seq;        // TCP: sequence number of the first payload byte
    u16 payload_len;    // true length of the L4 payload (for TCP, incl. the 2-byte length prefix)
    u16 captured;       // bytes copied into payload[]
    u16 sport;
    u16 dport;
    u16 dns_id;
    u16 dns_flags;      // QR|opcode|AA|TC|RD|RA|Z|AD|CD|rcode, host order
    u16 qdcount;
    u16 ancount;
    u16 nscount;
    u16 arcount;
    u8 pkt_type;        // PACKET_HOST, PACKET_OTHERHOST, PACKET_OUTGOING, ...
    u8 family;          // 4 or 6
    u8 proto;           // IPPROTO_UDP or IPPROTO_TCP (of the DNS packet, also for ICMP errors)
    u8 kind;            // KIND_*
    u8 icmp_type;
    u8 icmp_code;
    u8 tcp_flags;
    u8 dns_at;          // offset of the DNS header in payload[]: 0 (UDP) or 2 (TCP)
    u8 saddr[16];       // IPv4 in the first 4 bytes
    u8 daddr[16];
    u8 payload[PAYLOAD_MAX];
};

// Query seen at a vantage point, keyed from the client's side (32 bytes: compared as four u64).
struct query_key {
    u32 capture_id;
    u32 generation;     // `generation[0]` when seen: a reset makes every older sighting a stranger
    u16 client_port;
    u16 dns_id;
    u8 proto;
    u8 pad[3];
    u8 client[16];
};

struct query_slot {
    struct query_key key;
    u64 first_ts;
    u64 answered_ts;
};

#ifndef RING_PAGES
#define RING_PAGES (1 << 13)                     // 32 MiB; a power of two (tests shrink it to force loss)
#endif
// Query sightings, direct-mapped: a key's slot is a hash of it, and a new query whose key lands in an
// occupied slot takes it over, as an LRU would evict the older one. An LRU hash cost about half the
// program's time (its locks and lists); an array lookup is inlined. 2^18 slots: at 50k new sightings
// a second, an answer is still matched after a few seconds.
#define QUERY_SLOTS (1 << 18)

#ifdef DNSC_LIBBPF
// The ring's size is set again by the loader before it creates the map (RING_PAGES of its process).
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, RING_PAGES * 4096); } events SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 1); __type(key, u32); __type(value, u32); } progs SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, COUNTER_MAX); __type(key, u32); __type(value, u64); } counters SEC(".maps");
// 1 at the DNS ports to trace (host order): an array lookup is inlined
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 65536); __type(key, u32); __type(value, u8); } dns_ports SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, QUERY_SLOTS); __type(key, u32); __type(value, struct query_slot); } queries SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, u32); __type(value, u32); } generation SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 1); __type(key, u32); __type(value, struct event); } scratch SEC(".maps");
char LICENSE[] SEC("license") = "GPL";

static __always_inline u64 *counter_at(int *index) { return bpf_map_lookup_elem(&counters, index); }
static __always_inline u8 *port_flag(u32 *port) { return bpf_map_lookup_elem(&dns_ports, port); }
static __always_inline struct query_slot *query_at(u32 *index) { return bpf_map_lookup_elem(&queries, index); }
static __always_inline u32 *generation_now(int *zero) { return bpf_map_lookup_elem(&generation, zero); }
static __always_inline struct event *scratch_event(int *zero) { return bpf_map_lookup_elem(&scratch, zero); }
static __always_inline struct event *reserve_event(void) { return bpf_ringbuf_reserve(&events, sizeof(struct event), 0); }
static __always_inline void submit_event(struct event *e, u64 flags) { bpf_ringbuf_submit(e, flags); }
#define TRACER_SECTION SEC("socket")
#else
BPF_RINGBUF_OUTPUT(events, RING_PAGES);
BPF_PROG_ARRAY(progs, 1);
BPF_PERCPU_ARRAY(counters, u64, COUNTER_MAX);
BPF_ARRAY(dns_ports, u8, 65536);                // 1 at the DNS ports to trace (host order): an array lookup is inlined
BPF_ARRAY(queries, struct query_slot, QUERY_SLOTS);
BPF_ARRAY(generation, u32, 1);
BPF_PERCPU_ARRAY(scratch, struct event, 1);

// bcc rewrites `map.method()` calls and refuses them inside macros: hence functions, not macros.
static __always_inline u64 *counter_at(int *index) { return counters.lookup(index); }
static __always_inline u8 *port_flag(u32 *port) { return dns_ports.lookup(port); }
static __always_inline struct query_slot *query_at(u32 *index) { return queries.lookup(index); }
static __always_inline u32 *generation_now(int *zero) { return generation.lookup(zero); }
static __always_inline struct event *scratch_event(int *zero) { return scratch.lookup(zero); }
static __always_inline struct event *reserve_event(void) { return events.ringbuf_reserve(sizeof(struct event)); }
static __always_inline void submit_event(struct event *e, u64 flags) { events.ringbuf_submit(e, flags); }
#define TRACER_SECTION
#endif

static __always_inline void count(int index) {
    u64 *value = counter_at(&index);
    if (value)
        (*value)++;
}

// Waking the reader for every event costs a wakeup and a context switch per
// packet whenever the reader has caught up, which at low rates is every
// packet. The reader polls on a timer instead; the kernel wakes it only every
// WAKEUP_EVERY events per CPU, so bursts cannot fill the ring between polls.
// 1024: at 10k qps (100k events/s) 256 woke the node agent 400 times a second,
// about a tenth of its CPU; 1024 x 64 CPUs still fits the 32 MiB ring (53k records).
#ifndef WAKEUP_EVERY
#define WAKEUP_EVERY 1024
#endif
static __always_inline u64 wakeup_flags(void) {
    int index = COUNTER_EVENTS;
    u64 *sent = counter_at(&index);
    return sent && (*sent % WAKEUP_EVERY) == 0 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

// Offsets below are relative to the network header. On a packet socket skb->data
// is the MAC header; under BPF_PROG_TEST_RUN it is the network header. `base`
// (found by l2_length) bridges the two, and bpf_skb_load_bytes, unlike its
// _relative variant, also reads payload held in page fragments (TCP).
static __always_inline int load(struct __sk_buff *skb, u32 base, u32 off, void *to, u32 len) {
    return bpf_skb_load_bytes(skb, base + off, to, len);
}

// The length of the link-layer header in front of the network header: 14
// (Ethernet) or 0 (none), whichever makes the 20 bytes read there match the
// network header's first 20 (read via its known, linear start).
static __always_inline int l2_length(struct __sk_buff *skb) {
    u64 net[3] = {}, at[3] = {};
    if (bpf_skb_load_bytes_relative(skb, 0, net, 20, BPF_HDR_START_NET) < 0)
        return -1;
    u32 candidates[2] = {14, 0};
    #pragma unroll
    for (int i = 0; i < 2; i++) {
        at[2] = 0;
        if (bpf_skb_load_bytes(skb, candidates[i], at, 20) == 0 && at[0] == net[0] && at[1] == net[1] && at[2] == net[2])
            return candidates[i];
    }
    return -1;
}

static __always_inline int is_dns_port(u16 port) {
    u32 index = port;
    u8 *traced = port_flag(&index);
    return traced && *traced;
}

// The L3/L4 facts of one packet, filled by parse_ip.
struct l4 {
    u32 l4_off;     // offset of the UDP/TCP header
    u32 l3_end;     // end of the IP datagram (from its length field)
    u8 family;
    u8 proto;
};

// Parse the IP header at `off`; returns 0 on success. Walks IPv6 extension headers.
static __always_inline int parse_ip(struct __sk_buff *skb, u32 base, u32 off, u16 ethertype, struct event *e, struct l4 *out) {
    if (ethertype == ETH_P_IP) {
        struct iphdr ip;
        if (load(skb, base, off, &ip, sizeof(ip)) < 0)
            return -1;
        u32 ihl = (((u8 *)&ip)[0] & 0x0f) * 4;  // one read of the header: each helper call costs ~35 ns
        if (ihl < 20)
            return -1;
        if (ip.frag_off & bpf_htons(0x1fff))  // a non-first fragment has no L4 header
            return -1;
        __builtin_memcpy(e->saddr, &ip.saddr, 4);
        __builtin_memcpy(e->daddr, &ip.daddr, 4);
        out->family = 4;
        out->proto = ip.protocol;
        out->l4_off = off + ihl;
        out->l3_end = off + bpf_ntohs(ip.tot_len);
        return 0;
    }
    if (ethertype == ETH_P_IPV6) {
        struct ipv6hdr ip6;
        if (load(skb, base, off, &ip6, sizeof(ip6)) < 0)
            return -1;
        __builtin_memcpy(e->saddr, &ip6.saddr, 16);
        __builtin_memcpy(e->daddr, &ip6.daddr, 16);
        u8 next = ip6.nexthdr;
        u32 cur = off + sizeof(ip6);
        #pragma unroll
        for (int i = 0; i < MAX_IPV6_EXT; i++) {
            if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS) {
                u8 ext[2];
                if (load(skb, base, cur, ext, 2) < 0)
                    return -1;
                next = ext[0];
                cur += (ext[1] + 1) * 8;
            } else if (next == IPPROTO_FRAGMENT) {
                u8 frag[4];
                if (load(skb, base, cur, frag, 4) < 0)
                    return -1;
                if (((frag[2] << 8) | frag[3]) & 0xfff8)  // offset != 0: no L4 header here
                    return -1;
                next = frag[0];
                cur += 8;
            } else if (next == IPPROTO_AH) {
                u8 ext[2];
                if (load(skb, base, cur, ext, 2) < 0)
                    return -1;
                next = ext[0];
                cur += (ext[1] + 2) * 4;
            } else {
                break;
            }
        }
        out->family = 6;
        out->proto = next;
        out->l4_off = cur;
        out->l3_end = off + sizeof(ip6) + bpf_ntohs(ip6.payload_len);
        return 0;
    }
    return -1;
}

static __always_inline void set_dns_header(const u16 *h, struct event *e) {
    e->dns_id = bpf_ntohs(h[0]);
    e->dns_flags = bpf_ntohs(h[1]);
    e->qdcount = bpf_ntohs(h[2]);
    e->ancount = bpf_ntohs(h[3]);
    e->nscount = bpf_ntohs(h[4]);
    e->arcount = bpf_ntohs(h[5]);
}

static __always_inline void read_dns_header(struct __sk_buff *skb, u32 base, u32 off, struct event *e) {
    u16 h[6];
    if (load(skb, base, off, h, sizeof(h)) == 0)
        set_dns_header(h, e);
}

static __always_inline void copy_payload(struct __sk_buff *skb, u32 base, u32 off, u32 len, struct event *e) {
    u64 n = len < PAYLOAD_MAX ? len : PAYLOAD_MAX;
    // Make the bound visible to the verifier after clang's optimisations.
    asm volatile("%0 &= 0x3ff" : "+r"(n));
    if (n == 0 || n > PAYLOAD_MAX)
        return;
    if (load(skb, base, off, e->payload, n) == 0)
        e->captured = n;
}

static __always_inline u32 slot_of(const struct query_key *key) {
    const u64 *word = (const u64 *)key;
    u64 h = 0;
    #pragma unroll
    for (int i = 0; i < 4; i++) {
        h = (h ^ word[i]) * 0x9E3779B97F4A7C15ULL;  // Fibonacci hashing: the high bits are well mixed
        h ^= h >> 29;
    }
    return (u32)(h >> 32) & (QUERY_SLOTS - 1);
}

static __always_inline int same_key(const struct query_key *a, const struct query_key *b) {
    const u64 *x = (const u64 *)a, *y = (const u64 *)b;
    return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

// Latency of a response at this vantage point, matched to the first sighting of its query.
static __always_inline void match_query(struct event *e) {
    int zero = 0;
    u32 *gen = generation_now(&zero);
    if (!gen)
        return;
    struct query_key key = {};
    int response = e->dns_flags >> 15;
    key.capture_id = e->capture_id;
    key.generation = *gen;
    key.dns_id = e->dns_id;
    key.proto = e->proto;
    key.client_port = response ? e->dport : e->sport;
    __builtin_memcpy(key.client, response ? e->daddr : e->saddr, 16);
    u32 index = slot_of(&key);
    struct query_slot *slot = query_at(&index);
    if (!slot)
        return;
    int seen = same_key(&slot->key, &key);
    u64 now = e->ts_ns;
    if (!response) {
        // A new query (or one reusing an answered key) starts the clock; a second
        // sighting of an unanswered query (DNAT, retransmit) keeps the first time.
        if (!seen || slot->answered_ts) {
            slot->first_ts = 0;  // narrows the window in which a response on another CPU reads a half-written slot
            slot->key = key;
            slot->answered_ts = 0;
            slot->first_ts = now;
        }
        return;
    }
    if (seen && slot->first_ts) {
        e->latency_ns = now - slot->first_ts;
        if (!slot->answered_ts)
            slot->answered_ts = now;
    }
}

TRACER_SECTION
int dns_trace(struct __sk_buff *skb) {
    int zero = 0;
    struct event *e = scratch_event(&zero);
    if (!e)
        return 0;
    __builtin_memset(e, 0, sizeof(*e) - PAYLOAD_MAX);

    u16 ethertype = bpf_ntohs(skb->protocol);
    struct l4 l4 = {};
    if (ethertype != ETH_P_IP && ethertype != ETH_P_IPV6) {
        count(COUNTER_NON_IP);
        return 0;
    }
    int l2 = l2_length(skb);
    if (l2 < 0) {
        count(COUNTER_NON_IP);
        return 0;
    }
    u32 base = l2;
    if (parse_ip(skb, base, 0, ethertype, e, &l4) < 0) {
        count(COUNTER_NON_DNS);
        return 0;
    }

    e->kind = KIND_DNS;
    u32 l4_off = l4.l4_off;
    u32 quoted_ip = 0;
    if ((l4.family == 4 && l4.proto == IPPROTO_ICMP) || (l4.family == 6 && l4.proto == IPPROTO_ICMPV6)) {
        // An ICMP error quotes the offending packet after its 8-byte header: parse that one.
        u8 icmp[2];
        if (load(skb, base, l4_off, icmp, 2) < 0) {
            count(COUNTER_NON_DNS);
            return 0;
        }
        int is_error = l4.family == 4 ? (icmp[0] == 3 || icmp[0] == 11) : (icmp[0] >= 1 && icmp[0] <= 4);
        if (!is_error) {
            count(COUNTER_NON_DNS);
            return 0;
        }
        e->icmp_type = icmp[0];
        e->icmp_code = icmp[1];
        e->kind = KIND_ICMP_ERROR;
        quoted_ip = l4_off + 8;
        struct l4 inner = {};
        if (parse_ip(skb, base, quoted_ip, l4.family == 4 ? ETH_P_IP : ETH_P_IPV6, e, &inner) < 0) {
            count(COUNTER_NON_DNS);
            return 0;
        }
        u32 outer_end = l4.l3_end;
        l4 = inner;
        l4.l3_end = outer_end;  // the quote is cut short: it ends where the ICMP packet ends
        l4_off = inner.l4_off;
    }
    e->family = l4.family;
    e->proto = l4.proto;

    u32 data_off;
    // UDP: its header and the DNS header after it in one read where the packet holds both
    struct { struct udphdr udp; u16 dns[6]; } udp_dns = {};
    int have_dns_header = 0;
    if (l4.proto == IPPROTO_UDP) {
        have_dns_header = load(skb, base, l4_off, &udp_dns, sizeof(udp_dns)) == 0;
        if (!have_dns_header && load(skb, base, l4_off, &udp_dns.udp, sizeof(udp_dns.udp)) < 0) {
            count(COUNTER_NON_DNS);
            return 0;
        }
        e->sport = bpf_ntohs(udp_dns.udp.source);
        e->dport = bpf_ntohs(udp_dns.udp.dest);
        data_off = l4_off + sizeof(udp_dns.udp);
    } else if (l4.proto == IPPROTO_TCP) {
        struct tcphdr tcp;
        if (load(skb, base, l4_off, &tcp, sizeof(tcp)) < 0) {
            count(COUNTER_NON_DNS);
            return 0;
        }
        e->sport = bpf_ntohs(tcp.source);
        e->dport = bpf_ntohs(tcp.dest);
        e->tcp_seq = bpf_ntohl(tcp.seq);
        e->tcp_flags = ((u8 *)&tcp)[13];
        data_off = l4_off + tcp.doff * 4;
        e->dns_at = 2;
    } else {
        count(COUNTER_NON_DNS);
        return 0;
    }
    if (!is_dns_port(e->sport) && !is_dns_port(e->dport)) {
        count(COUNTER_NON_DNS);
        return 0;
    }

    u32 payload_len = l4.l3_end > data_off ? l4.l3_end - data_off : 0;
    if (e->kind == KIND_DNS && l4.proto == IPPROTO_TCP && payload_len == 0) {
        if (!(e->tcp_flags & (TCP_SYN | TCP_RST))) {
            count(COUNTER_TCP_NO_PAYLOAD);  // pure ACKs and FINs
            return 0;
        }
        e->kind = KIND_TCP_CONTROL;
    }
    if (payload_len < e->dns_at + DNS_HEADER_LEN && e->kind == KIND_DNS) {
        count(COUNTER_TRUNCATED_HDR);
        return 0;
    }
    e->payload_len = payload_len;
    e->ts_ns = bpf_ktime_get_boot_ns();
    e->capture_id = skb->cb[0];
    e->ifindex = skb->ifindex;
    e->skb_len = skb->len;
    e->pkt_type = skb->pkt_type;
    if (e->kind != KIND_TCP_CONTROL && payload_len >= e->dns_at + DNS_HEADER_LEN) {
        if (have_dns_header)
            set_dns_header(udp_dns.dns, e);
        else
            read_dns_header(skb, base, data_off + e->dns_at, e);
        if (e->kind == KIND_DNS)
            match_query(e);
    }

    // The payload goes straight into the ring record: only the fixed part is copied from the scratch event.
    struct event *out = reserve_event();
    if (!out) {
        count(COUNTER_LOST);
        return 0;
    }
    __builtin_memcpy(out, e, sizeof(*e) - PAYLOAD_MAX);
    copy_payload(skb, base, data_off, payload_len, out);
    u64 flags = wakeup_flags();
    count(COUNTER_EVENTS);
    submit_event(out, flags);
    return 0;
}
