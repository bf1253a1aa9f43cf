package tftp

import (
	"fmt"
	"io"
)

// netasciiFile converts a file to netascii (RFC 764: CR LF for a newline,
// CR NUL for a bare CR) as it is read, so a transfer holds a block's worth
// of the file, never the whole of it. Reads come in file order, with
// retransmits going back at most a window: a few checkpoints (where an
// output offset starts in the source) are enough to go back without
// converting from the start again.
type netasciiFile struct {
	src  File
	size int64 // of the converted output

	// marks are output offsets at which a read began, with the source
	// offset that produced the byte there; a source CR or LF becomes two
	// output bytes, so an output offset may fall between them (half).
	marks []mark
	buf   []byte
}

type mark struct {
	out, src int64
	half     bool // the offset is the second byte of a two-byte pair
}

// maxMarks bounds the checkpoints kept; a retransmit goes back one window
// (at most 65535 blocks), and a read before the oldest mark converts from
// the start again: slow, but correct.
const maxMarks = 1024

// maxNetascii bounds the files served as netascii: the converted size
// (tsize, the last block) takes a pass over the file before the first
// block, and netascii is for people's text files, not boot images.
const maxNetascii = 16 << 20

func netascii(f File) (File, error) {
	if f.Size() > maxNetascii {
		return nil, fmt.Errorf("file larger than %d bytes; ask for octet mode", maxNetascii)
	}
	n := &netasciiFile{src: f, buf: make([]byte, 32<<10)}
	// tsize and the place of the last block need the converted size: one
	// pass over the file, counting the bytes that double.
	var off int64
	for {
		k, err := f.ReadAt(n.buf, off)
		for _, c := range n.buf[:k] {
			n.size++
			if c == '\n' || c == '\r' {
				n.size++
			}
		}
		off += int64(k)
		if err == io.EOF || (err == nil && k == 0) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read file: %w", err)
		}
	}
	if off != f.Size() {
		return nil, fmt.Errorf("read file: %d of %d bytes", off, f.Size())
	}
	n.marks = []mark{{}}
	return n, nil
}

func (n *netasciiFile) Size() int64  { return n.size }
func (n *netasciiFile) Close() error { return n.src.Close() }

// ReadAt converts from the nearest checkpoint at or before off.
func (n *netasciiFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= n.size {
		return 0, io.EOF
	}
	m := n.marks[0]
	for _, c := range n.marks {
		if c.out <= off && c.out > m.out {
			m = c
		}
	}
	out, src, half := m.out, m.src, m.half
	written := 0
	for written < len(p) && out < n.size {
		k, err := n.src.ReadAt(n.buf, src)
		if k == 0 {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return written, fmt.Errorf("netascii: %w", err)
		}
		for i := 0; i < k && written < len(p); i++ {
			c := n.buf[i]
			pair := c == '\n' || c == '\r'
			// The bytes this source byte becomes, from where we are.
			var bytes [2]byte
			cnt := 1
			switch {
			case c == '\n':
				bytes = [2]byte{'\r', '\n'}
				cnt = 2
			case c == '\r':
				bytes = [2]byte{'\r', 0}
				cnt = 2
			default:
				bytes[0] = c
			}
			j := 0
			if half {
				j, half = 1, false
			}
			for ; j < cnt; j++ {
				if out >= off && written < len(p) {
					if written == 0 {
						n.mark(mark{out: out, src: src + int64(i), half: pair && j == 1})
					}
					p[written] = bytes[j]
					written++
				} else if out >= off {
					// p is full in the middle of a pair: the next read
					// starts on its second byte.
					n.mark(mark{out: out, src: src + int64(i), half: true})
					return written, nil
				}
				out++
			}
		}
		src += int64(k)
	}
	if written < len(p) {
		return written, io.EOF
	}
	return written, nil
}

func (n *netasciiFile) mark(m mark) {
	for _, c := range n.marks {
		if c.out == m.out {
			return
		}
	}
	if len(n.marks) >= maxMarks {
		// Keep the start: it is the fallback for any offset.
		copy(n.marks[1:], n.marks[2:])
		n.marks = n.marks[:len(n.marks)-1]
	}
	n.marks = append(n.marks, m)
}
