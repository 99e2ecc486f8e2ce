/* libpcap glue for the decoder: compile a filter once per link type, run it per packet.
 * Kept in C because pcap_compile needs a pcap_t and DLT_RAW's value differs per platform. */
#ifndef FASTFLOW_BPF_SHIM_H
#define FASTFLOW_BPF_SHIM_H
#include <string.h>
#include <pcap/pcap.h>

/* File link types (LINKTYPE_*) are fixed on disk; libpcap's compiler wants the platform's DLT_* value. */
static int ff_linktype_to_dlt(int linktype) {
    switch (linktype) {
    case 101: return DLT_RAW;
    case 108: return DLT_LOOP;
    default: return linktype;
    }
}

/* Returns 0 and fills prog, or -1 with libpcap's message in errbuf (at least PCAP_ERRBUF_SIZE bytes). */
static int ff_bpf_compile(int linktype, const char *expr, struct bpf_program *prog, char *errbuf) {
    pcap_t *p = pcap_open_dead(ff_linktype_to_dlt(linktype), 262144);
    if (p == NULL) {
        strncpy(errbuf, "pcap_open_dead failed", PCAP_ERRBUF_SIZE - 1);
        errbuf[PCAP_ERRBUF_SIZE - 1] = 0;
        return -1;
    }
    if (pcap_compile(p, prog, expr, 1, PCAP_NETMASK_UNKNOWN) != 0) {
        strncpy(errbuf, pcap_geterr(p), PCAP_ERRBUF_SIZE - 1);
        errbuf[PCAP_ERRBUF_SIZE - 1] = 0;
        pcap_close(p);
        return -1;
    }
    pcap_close(p);
    return 0;
}

static int ff_bpf_match(const struct bpf_program *prog, const unsigned char *pkt,
                        unsigned int wirelen, unsigned int caplen) {
    return bpf_filter(prog->bf_insns, pkt, wirelen, caplen) != 0;
}
#endif
