/*  fuzz_substitute.c - libFuzzer harness for http_substitute() (the
    %SERVER_ADDRESS%, %SERVER_PORT% and %SERVER_PROTOCOL% placeholders the
    server fills into the web UI's .html, .js and .mjs files).

    Input: a flag byte (secure, where the address comes from), a port (any
    int, negative too), an address (length byte then bytes; '%' and NUL are
    replaced, since an operator's address never holds them), then the file.
    Checks:
    - the output equals that of a plain reference loop written here, and
      its length is the input's plus, for each placeholder replaced, the
      value's length minus the placeholder's; it is NUL-terminated;
    - no placeholder is left in the output, when the address cannot form
      one with the text around it (it is not empty and has none of the
      capitals and '_' that placeholders are made of).
*/
#include "fuzz_common.h"
#include "http.h"

typedef struct {
    const char *token;
    const char *value;
    size_t count;               /* how many the reference replaced */
} holder_t;

#define HOLDERS 3

/*  The reference: at each byte, a placeholder starting here is replaced,
    anything else is copied.  Returns a malloc'd buffer. */
static char *
reference (holder_t *holders, const uint8_t *data, size_t len, size_t *out_len)
{
    size_t cap = len + 1;
    for (int h = 0; h < HOLDERS; h++)
        cap += (len / strlen (holders [h].token) + 1) * strlen (holders [h].value);
    char *out = malloc (cap);
    FUZZ_CHECK (out);
    size_t o = 0;
    for (size_t i = 0; i < len; ) {
        int h;
        for (h = 0; h < HOLDERS; h++) {
            size_t t = strlen (holders [h].token);
            if (len - i >= t && memcmp (data + i, holders [h].token, t) == 0)
                break;
        }
        if (h < HOLDERS) {
            size_t v = strlen (holders [h].value);
            memcpy (out + o, holders [h].value, v);
            o += v;
            i += strlen (holders [h].token);
            holders [h].count++;
        }
        else
            out [o++] = (char) data [i++];
    }
    FUZZ_CHECK (o < cap);
    *out_len = o;
    return out;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    fuzz_input_t in = { data, size, 0 };
    uint8_t flags = fuzz_u8 (&in);
    int port = (int) fuzz_u32 (&in);
    char address [64];
    const char *address_p;
    switch ((flags >> 1) & 3) {
        case 0: {
            size_t n = fuzz_u8 (&in) % sizeof address;
            for (size_t i = 0; i < n; i++) {
                uint8_t c = fuzz_u8 (&in);
                address [i] = (char) (c == '%' || c == 0 ? '_' : c);
            }
            address [n] = 0;
            address_p = address;
            break;
        }
        case 1: address_p = "chat.example.org"; break;
        case 2: address_p = "::1"; break;
        default: address_p = NULL; break;       /* means localhost */
    }
    http_options_t options = { .server_address = address_p, .chat_port = port,
                               .chat_secure = flags & 1 };
    size_t len;
    const uint8_t *file = fuzz_rest (&in, &len);

    size_t out_len = (size_t) -1;
    char *out = http_substitute (&options, (const char *) file, len, &out_len);
    FUZZ_CHECK (out);
    FUZZ_CHECK (out_len != (size_t) -1);
    FUZZ_CHECK (out [out_len] == 0);

    char port_text [16];
    snprintf (port_text, sizeof port_text, "%d", port);
    const char *address_value = address_p ? address_p : "localhost";
    holder_t holders [HOLDERS] = {
        { "%SERVER_ADDRESS%", address_value, 0 },
        { "%SERVER_PORT%", port_text, 0 },
        { "%SERVER_PROTOCOL%", (flags & 1) ? "wss" : "ws", 0 },
    };
    size_t ref_len;
    char *ref = reference (holders, file, len, &ref_len);
    FUZZ_CHECK (out_len == ref_len);
    FUZZ_CHECK (memcmp (out, ref, out_len) == 0);

    /*  Length arithmetic, done the other way round. */
    long long expect = (long long) len;
    for (int h = 0; h < HOLDERS; h++)
        expect += (long long) holders [h].count
                * ((long long) strlen (holders [h].value) - (long long) strlen (holders [h].token));
    FUZZ_CHECK (expect == (long long) out_len);

    bool address_safe = address_value [0] != 0
                     && !strpbrk (address_value, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_");
    if (address_safe)
        for (int h = 0; h < HOLDERS; h++)
            FUZZ_CHECK (!fuzz_contains (out, out_len, holders [h].token, strlen (holders [h].token)));

    /*  Without a placeholder in the input, the output is the input. */
    bool any = false;
    for (int h = 0; h < HOLDERS; h++)
        any = any || fuzz_contains (file, len, holders [h].token, strlen (holders [h].token));
    if (!any)
        FUZZ_CHECK (out_len == len && memcmp (out, file, len) == 0);

    free (ref);
    free (out);
    return 0;
}
