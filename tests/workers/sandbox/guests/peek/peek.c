/* A command-module probe of the sandbox: {"path": P, "mode": "r"|"w"} on stdin.
 * Prints {"token": <$API_TOKEN or null>, "secret": <$TOOLBUS_TEST_HOST_SECRET or null>,
 *         "ok": <bool>, "text": <first line read, or the errno message>}.
 * Test input only: the path is taken between the quotes after "path", with no escapes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void json_string_or_null(const char *s) {
    if (!s) { fputs("null", stdout); return; }
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') putchar('\\');
        if ((unsigned char)*s >= 0x20) putchar(*s);
    }
    putchar('"');
}

static int field(const char *input, const char *name, char *out, size_t size) {
    char key[32];
    snprintf(key, sizeof key, "\"%s\":\"", name);
    const char *start = strstr(input, key);
    if (!start) return 0;
    start += strlen(key);
    const char *end = strchr(start, '"');
    if (!end || (size_t)(end - start) >= size) return 0;
    memcpy(out, start, end - start);
    out[end - start] = 0;
    return 1;
}

int main(void) {
    char input[4096] = {0}, path[1024], mode[4] = "r", text[256] = {0};
    fread(input, 1, sizeof input - 1, stdin);
    if (!field(input, "path", path, sizeof path)) { fputs("missing path\n", stderr); return 2; }
    field(input, "mode", mode, sizeof mode);
    int ok = 0;
    FILE *f = fopen(path, mode[0] == 'w' ? "w" : "r");
    if (!f) {
        snprintf(text, sizeof text, "%s", strerror(errno));
    } else if (mode[0] == 'w') {
        ok = fputs("written by the guest", f) >= 0;
        ok = (fclose(f) == 0) && ok;
        snprintf(text, sizeof text, "%s", ok ? "written" : strerror(errno));
    } else {
        ok = fgets(text, sizeof text, f) != NULL;
        fclose(f);
    }
    fputs("{\"token\":", stdout);
    json_string_or_null(getenv("API_TOKEN"));
    fputs(",\"secret\":", stdout);
    json_string_or_null(getenv("TOOLBUS_TEST_HOST_SECRET"));
    printf(",\"ok\":%s,\"text\":", ok ? "true" : "false");
    json_string_or_null(text);
    fputs("}\n", stdout);
    return 0;
}
