/* test_json_fast.c - the fast path takes only what jansson takes, and gives
 * the same value (same keys in the same order); the rest it leaves to
 * jansson. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_fast.h"
#include "suites.h"

/* NULL when jansson refuses text; else its compact dump. */
static char *jansson_dump(const char *text)
{
    json_t *j = json_loadb(text, strlen(text), JSON_REJECT_DUPLICATES, NULL);
    char *d = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return d;
}

/* The fast path's verdict on text: 1 taken (and equal to jansson's), 0 left. */
static int fast_takes(const char *text)
{
    json_t *f = json_fast_load(text, strlen(text));
    if (!f)
        return 0;
    char *got = json_dumps(f, JSON_COMPACT), *want = jansson_dump(text);
    ck_assert_msg(want != NULL, "fast path took what jansson refuses: %s", text);
    ck_assert_str_eq(got, want);
    free(got);
    free(want);
    json_decref(f);
    return 1;
}

START_TEST(takes_the_bodies_services_write)
{
    const char *ok[] = {
        "{}",
        " {\"a\":1} \n",
        "{\"event_id\":\"0b6c7a52-3f7e-4c3e-9d2a-5b1e8f0a1c11\",\"type\":\"OrderCreated\","
        "\"items\":[{\"sku\":\"SKU-1\",\"qty\":2},{\"sku\":\"SKU-2\",\"qty\":10000}]}",
        "{ \"z\" : [ ] , \"a\" : { } , \"n\" : null , \"t\" : true , \"f\" : false }",
        "{\"big\":999999999999999999,\"neg\":-42,\"zero\":0,\"negzero\":-0}",
        "{\"\":\"\",\"deep\":[[[{\"x\":[1,2,3]}]]]}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        ck_assert_msg(fast_takes(ok[i]), "left to jansson: %s", ok[i]);
}
END_TEST

/* Valid or not, these are jansson's to decide. */
START_TEST(leaves_everything_else_to_jansson)
{
    const char *other[] = {
        "", "  ", "[]", "[1]", "\"s\"", "1", "null",
        "{\"a\":1,\"a\":2}",              /* duplicate key: jansson refuses it */
        "{\"a\":{\"b\":1,\"b\":1}}",
        "{\"a\":\"\\u0041\"}", "{\"a\\n\":1}", /* escapes */
        "{\"a\":\"caf\xc3\xa9\"}",        /* non-ASCII */
        "{\"a\":\"\x7f\"}", "{\"a\":\"\t\"}",
        "{\"a\":1.5}", "{\"a\":1e3}", "{\"a\":1E3}", "{\"a\":01}", "{\"a\":-}",
        "{\"a\":1234567890123456789}",   /* 19 digits */
        "{\"a\":99999999999999999999999}",
        "{\"a\":tru}", "{\"a\":truex}", "{\"a\":nul}", "{\"a\":+1}",
        "{\"a\":1,}", "{,}", "{\"a\" 1}", "{\"a\":1", "{\"a\":[1,]}", "{\"a\":[1 2]}",
        "{\"a\":1} x", "{\"a\":1}{}", "{a:1}", "{'a':1}",
        "{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        ck_assert_msg(!fast_takes(other[i]), "fast path took: %s", other[i]);
}
END_TEST

/* Every prefix and every one-byte change of a body: where the fast path
 * takes one, jansson takes it too and reads the same value. */
START_TEST(agrees_with_jansson_on_mutations)
{
    const char *body = "{\"event_id\":\"0b6c7a52-3f7e-4c3e-9d2a-5b1e8f0a1c11\",\"n\":-12,"
                       "\"items\":[{\"sku\":\"S\",\"qty\":2},true,false,null,[]],\"o\":{}}";
    static const char subst[] = "{}[]\":,-0123456789.eE \\tfnrua\x01\x7f\xc3";
    size_t n = strlen(body);
    char *t = malloc(n + 1);
    for (size_t cut = 0; cut <= n; cut++) {
        memcpy(t, body, cut);
        t[cut] = '\0';
        fast_takes(t);
    }
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < sizeof subst - 1; k++) {
            memcpy(t, body, n + 1);
            t[i] = subst[k];
            fast_takes(t);
        }
    free(t);
}
END_TEST

/* JSON that jansson cannot hold loads with null in its place (an unknown
 * field's value is ignored, a known one's is of the wrong kind), and what
 * is not JSON stays refused. */
START_TEST(json_beyond_jansson_loads_as_null)
{
    static const struct { const char *text, *want; } cases[] = {
        {"{\"a\":1,\"x\":18446744073709551615}", "{\"a\": 1, \"x\": null}"},
        {"{\"x\":-99999999999999999999999,\"a\":[1e400,-1e400,1.5e-400]}",
         "{\"x\": null, \"a\": [null, null, 0.0]}"},
        {"{\"s\":\"a\\u0000b\",\"t\":\"a\\\\u0000b\"}", "{\"s\": null, \"t\": \"a\\\\u0000b\"}"},
        {"{\"k\\u0000\": 2, \"a\" : \"\\u0000\" }", "{\"k\\uFFFF\\uFFFE\": 2, \"a\": null}"},
        {"{\"k\\u0000\":1,\"k\\u0001\":2,\"n\":[\"\\u0000\",[\"x\\u0000\"],{\"m\":\"\\u0000\"}]}",
         "{\"k\\uFFFF\\uFFFE\": 1, \"k\\u0001\": 2, \"n\": [null, [null], {\"m\": null}]}"},
        {"[9223372036854775807, 9223372036854775808]", "[9223372036854775807, null]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_error_t err;
        json_t *j = json_load_body(cases[i].text, strlen(cases[i].text), &err);
        ck_assert_msg(j != NULL, "%s: %s", cases[i].text, err.text);
        char *got = json_dumps(j, JSON_ENSURE_ASCII);
        ck_assert_msg(strcmp(got, cases[i].want) == 0, "%s -> %s", cases[i].text, got);
        free(got);
        json_decref(j);
    }
    /* not JSON, each beside or after what jansson cannot hold (a review
     * found the first version taking the second group) */
    static const char *const refused[] = {
        "{\"x\":99999999999999999999,}", "{\"x\":\"\\u0000\" \"y\":1}",
        "{\"x\":1e400", "{99999999999999999999:1}", "{\"a\":1,\"a\":99999999999999999999}",
        "{\"a\":99999999999999999999-}", "{\"a\":99999999999999999999+}", "{\"a\":1e999.}",
        "{\"a\":1e999e5}", "{\"a\":-1E999-+}", "{\"a\":--99999999999999999999}",
        "{\"x\":1e400,\"b\":00099999999999999999999}", "{\"x\":1e999,\"b\":1.e999}",
        "{\"x\":1e999,\"b\":-.5e999}", "{\"a\":\"\\u0000\",\"b\":\"\\q\\u0000\"}",
        "{\"a\":\"\\uD800\\u0000\"}", "{\"a\":\"\\u00\\u0000\"}", "{\"a\":\"\t\\u0000\"}",
        "{\"a\":\"\xff\xfe\\u0000\"}", "{\"a\\u0000\":1,\"b\":\"\\q\"}",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        json_error_t err;
        json_t *j = json_load_body(refused[i], strlen(refused[i]), &err);
        ck_assert_msg(j == NULL, "took %s", refused[i]);
    }
}
END_TEST

Suite *json_fast_suite(void)
{
    Suite *s = suite_create("json_fast");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, takes_the_bodies_services_write);
    tcase_add_test(tc, leaves_everything_else_to_jansson);
    tcase_add_test(tc, agrees_with_jansson_on_mutations);
    tcase_add_test(tc, json_beyond_jansson_loads_as_null);
    suite_add_tcase(s, tc);
    return s;
}
