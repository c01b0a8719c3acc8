/* wordcount: a WASI command tool for toolbus.
 *
 * Reads the tool's JSON arguments on stdin, {"text": "..."}, and writes the JSON result on
 * stdout: {"lines": L, "words": W, "characters": C}. Lines are counted like `wc -l` plus one
 * for a last line without a newline; words are runs of non-whitespace; characters are Unicode
 * code points. Bad input is reported on stderr with exit status 2, which toolbus turns into
 * an isError result carrying the message.
 *
 * The JSON reader is deliberately tiny: a top-level object whose "text" member is a string;
 * every other member is skipped whatever its type. toolbus validates the arguments against
 * the input schema before the module runs, so this only has to be correct, not forgiving.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *input;
static size_t pos, len;

static void fail(const char *why) {
    fprintf(stderr, "wordcount: %s (at byte %zu)\n", why, pos);
    exit(2);
}

static void skip_space(void) {
    while (pos < len && (input[pos] == ' ' || input[pos] == '\t' || input[pos] == '\n' || input[pos] == '\r')) pos++;
}

static void expect(char c) {
    skip_space();
    if (pos >= len || input[pos] != c) {
        char why[32];
        snprintf(why, sizeof why, "expected '%c'", c);
        fail(why);
    }
    pos++;
}

static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    fail("bad \\u escape");
    return 0;
}

static unsigned read_u16(void) {
    if (pos + 4 > len) fail("short \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) v = v * 16 + (unsigned)hex(input[pos++]);
    return v;
}

/* Appends code point cp as UTF-8 to out (which has room: an escape is never shorter than its UTF-8). */
static size_t put_utf8(char *out, unsigned cp) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F)); return 4;
}

/* Reads a JSON string at pos; returns it decoded (UTF-8, NUL-terminated) in a malloc'd buffer. */
static char *read_string(size_t *out_len) {
    expect('"');
    char *out = malloc(len - pos + 1);
    if (!out) fail("out of memory");
    size_t n = 0;
    while (1) {
        if (pos >= len) fail("unterminated string");
        char c = input[pos++];
        if (c == '"') break;
        if (c != '\\') { out[n++] = c; continue; }
        if (pos >= len) fail("unterminated escape");
        c = input[pos++];
        switch (c) {
        case '"': case '\\': case '/': out[n++] = c; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            unsigned cp = read_u16();
            if (cp >= 0xD800 && cp < 0xDC00 && pos + 6 <= len && input[pos] == '\\' && input[pos + 1] == 'u') {
                pos += 2;
                unsigned low = read_u16();
                if (low < 0xDC00 || low > 0xDFFF) fail("bad surrogate pair");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            }
            n += put_utf8(out + n, cp);
            break;
        }
        default: fail("bad escape");
        }
    }
    out[n] = '\0';
    *out_len = n;
    return out;
}

/* Skips any JSON value: strings are read, containers are matched by depth. */
static void skip_value(void) {
    skip_space();
    if (pos >= len) fail("expected a value");
    if (input[pos] == '"') { size_t n; free(read_string(&n)); return; }
    if (input[pos] != '{' && input[pos] != '[') {
        while (pos < len && input[pos] != ',' && input[pos] != '}' && input[pos] != ']') pos++;
        return;
    }
    int depth = 0;
    do {
        skip_space();
        if (pos >= len) fail("unterminated container");
        char c = input[pos];
        if (c == '"') { size_t n; free(read_string(&n)); continue; }
        if (c == '{' || c == '[') depth++;
        else if (c == '}' || c == ']') depth--;
        pos++;
    } while (depth > 0);
}

static char *read_stdin(size_t *n) {
    size_t cap = 4096, used = 0;
    char *buf = malloc(cap);
    if (!buf) fail("out of memory");
    size_t got;
    while ((got = fread(buf + used, 1, cap - used, stdin)) > 0) {
        used += got;
        if (used == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            if (!buf) fail("out of memory");
        }
    }
    *n = used;
    return buf;
}

int main(void) {
    input = read_stdin(&len);
    char *text = NULL;
    size_t text_len = 0;
    expect('{');
    skip_space();
    if (pos < len && input[pos] == '}') pos++;
    else {
        while (1) {
            size_t key_len;
            char *key = read_string(&key_len);
            expect(':');
            skip_space();
            if (strcmp(key, "text") == 0) {
                if (pos >= len || input[pos] != '"') fail("\"text\" must be a string");
                free(text);
                text = read_string(&text_len);
            } else {
                skip_value();
            }
            free(key);
            skip_space();
            if (pos < len && input[pos] == ',') { pos++; continue; }
            expect('}');
            break;
        }
    }
    if (!text) fail("missing argument \"text\"");

    long lines = 0, words = 0, characters = 0;
    int in_word = 0;
    for (size_t i = 0; i < text_len; i++) {
        unsigned char c = (unsigned char)text[i];
        if ((c & 0xC0) != 0x80) characters++; /* count lead bytes: one per code point */
        if (c == '\n') lines++;
        if (isspace(c)) in_word = 0;
        else if (!in_word) { in_word = 1; words++; }
    }
    if (text_len > 0 && text[text_len - 1] != '\n') lines++;
    printf("{\"lines\":%ld,\"words\":%ld,\"characters\":%ld}\n", lines, words, characters);
    return 0;
}
