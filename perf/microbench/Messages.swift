/// The messages the micro-benchmarks and allocation gates use: what a stateless proxy sees most.
enum SampleMessages {
    static let invite = """
        INVITE sip:bob@127.0.0.1:5070 SIP/2.0\r
        Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-4711-1-0;rport\r
        From: sipp <sip:sipp@127.0.0.1:5080>;tag=4711SIPpTag001\r
        To: service <sip:service@127.0.0.1:5070>\r
        Call-ID: 1-4711@127.0.0.1\r
        CSeq: 1 INVITE\r
        Contact: sip:sipp@127.0.0.1:5080\r
        Max-Forwards: 70\r
        Subject: Performance Test\r
        Content-Type: application/sdp\r
        Content-Length:   129\r
        \r
        v=0\r
        o=user1 53655765 2353687637 IN IP4 127.0.0.1\r
        s=-\r
        c=IN IP4 127.0.0.1\r
        t=0 0\r
        m=audio 6000 RTP/AVP 0\r
        a=rtpmap:0 PCMU/8000\r

        """

    static let ok = """
        SIP/2.0 200 OK\r
        Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKrs5a1c0e4fd2a36b7e,SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-4711-1-0;rport=5080;received=127.0.0.1\r
        From: sipp <sip:sipp@127.0.0.1:5080>;tag=4711SIPpTag001\r
        To: service <sip:service@127.0.0.1:5070>;tag=4712SIPpTag011\r
        Call-ID: 1-4711@127.0.0.1\r
        CSeq: 1 INVITE\r
        Contact: <sip:127.0.0.1:5070;transport=UDP>\r
        Content-Type: application/sdp\r
        Content-Length:   129\r
        \r
        v=0\r
        o=user1 53655765 2353687637 IN IP4 127.0.0.1\r
        s=-\r
        c=IN IP4 127.0.0.1\r
        t=0 0\r
        m=audio 6000 RTP/AVP 0\r
        a=rtpmap:0 PCMU/8000\r

        """
}
