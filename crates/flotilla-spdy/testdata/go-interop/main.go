// Interop check of flotilla-spdy's header compression against Go's compress/zlib, used the
// way spdystream's Framer (moby/spdystream spdy/read.go, write.go) uses it: one
// zlib.NewWriterLevelDict(BestCompression) per direction, Flush after each header block; one
// zlib.NewReaderDict per direction reading through an io.LimitedReader set to each frame's
// compressed length, which must be used up exactly.
//
//	go run . gen   > client.bin   # what kubectl sends for one forwarded connection
//	go run . check < server.bin   # parse a server's frames as spdystream would
package main

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
)

type writer struct {
	out  io.Writer
	buf  bytes.Buffer
	zlib *zlib.Writer
}

func (w *writer) headerBlock(h http.Header) []byte {
	names := make([]string, 0, len(h))
	for n := range h {
		names = append(names, n)
	}
	sort.Strings(names) // deterministic output (spdystream iterates the map)
	binary.Write(w.zlib, binary.BigEndian, uint32(len(names)))
	for _, n := range names {
		v := strings.Join(h[n], "\x00")
		binary.Write(w.zlib, binary.BigEndian, uint32(len(n)))
		io.WriteString(w.zlib, strings.ToLower(n))
		binary.Write(w.zlib, binary.BigEndian, uint32(len(v)))
		io.WriteString(w.zlib, v)
	}
	w.zlib.Flush()
	b := append([]byte(nil), w.buf.Bytes()...)
	w.buf.Reset()
	return b
}

func (w *writer) control(typ uint16, flags uint8, payload []byte) {
	binary.Write(w.out, binary.BigEndian, uint16(0x8003))
	binary.Write(w.out, binary.BigEndian, typ)
	binary.Write(w.out, binary.BigEndian, uint32(flags)<<24|uint32(len(payload)))
	w.out.Write(payload)
}

func (w *writer) synStream(id uint32, h http.Header) {
	block := w.headerBlock(h)
	p := new(bytes.Buffer)
	binary.Write(p, binary.BigEndian, id)
	binary.Write(p, binary.BigEndian, uint32(0))
	p.Write([]byte{0, 0})
	p.Write(block)
	w.control(1, 0, p.Bytes())
}

func (w *writer) data(id uint32, fin bool, d []byte) {
	var flags uint32
	if fin {
		flags = 1
	}
	binary.Write(w.out, binary.BigEndian, id)
	binary.Write(w.out, binary.BigEndian, flags<<24|uint32(len(d)))
	w.out.Write(d)
}

func gen() {
	w := &writer{out: os.Stdout}
	var err error
	if w.zlib, err = zlib.NewWriterLevelDict(&w.buf, zlib.BestCompression, dictionary); err != nil {
		panic(err)
	}
	// client-go tools/portforward handleConnection: error stream, closed at once, then the
	// data stream with the same headers but streamType=data.
	h := http.Header{}
	h.Set("streamType", "error")
	h.Set("port", "80")
	h.Set("requestID", "0")
	w.synStream(1, h)
	w.data(1, true, nil)
	h.Set("streamType", "data")
	w.synStream(3, h)
	w.data(3, false, []byte("hello "))
	w.data(3, true, []byte("spdystream"))
	p := new(bytes.Buffer)
	binary.Write(p, binary.BigEndian, uint32(1))
	w.control(6, 0, p.Bytes()) // PING 1
}

func check() {
	r := bufio.NewReader(os.Stdin)
	var limited io.LimitedReader
	var inflate io.ReadCloser
	for {
		var w0, w1 uint32
		if err := binary.Read(r, binary.BigEndian, &w0); err == io.EOF {
			fmt.Println("EOF")
			return
		} else if err != nil {
			panic(err)
		}
		binary.Read(r, binary.BigEndian, &w1)
		flags, length := w1>>24, w1&0xffffff
		if w0&0x80000000 == 0 {
			d := make([]byte, length)
			io.ReadFull(r, d)
			fmt.Printf("DATA stream=%d flags=%d %q\n", w0&0x7fffffff, flags, d)
			continue
		}
		typ := w0 & 0xffff
		if version := (w0 >> 16) & 0x7fff; version != 3 {
			panic(fmt.Sprintf("version %d", version))
		}
		if typ != 2 && typ != 8 { // not SYN_REPLY / HEADERS
			p := make([]byte, length)
			io.ReadFull(r, p)
			fmt.Printf("CONTROL type=%d flags=%d % x\n", typ, flags, p)
			continue
		}
		var id uint32
		binary.Read(r, binary.BigEndian, &id)
		limited.R, limited.N = r, int64(length-4)
		if inflate == nil {
			var err error
			if inflate, err = zlib.NewReaderDict(&limited, dictionary); err != nil {
				panic(err)
			}
		}
		var n uint32
		if err := binary.Read(inflate, binary.BigEndian, &n); err != nil {
			panic(err)
		}
		h := http.Header{}
		for i := uint32(0); i < n; i++ {
			var l uint32
			binary.Read(inflate, binary.BigEndian, &l)
			name := make([]byte, l)
			io.ReadFull(inflate, name)
			binary.Read(inflate, binary.BigEndian, &l)
			value := make([]byte, l)
			io.ReadFull(inflate, value)
			h.Add(string(name), string(value))
		}
		if limited.N != 0 {
			panic(fmt.Sprintf("compressed payload size was incorrect: %d bytes left", limited.N))
		}
		fmt.Printf("CONTROL type=%d stream=%d flags=%d headers=%v\n", typ, id, flags, h)
	}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "check" {
		check()
	} else {
		gen()
	}
}
