/* test_admin.c - the admin token comparison (the rest of the admin API is
 * tested against real servers: tests/integration/test_admin.c). */
#include "admin.h"
#include "suites.h"

START_TEST(token_equal_only_when_identical)
{
    const char *secret = "s3cret-admin-token-0123456789";
    ck_assert(admin_token_equal("s3cret-admin-token-0123456789", secret));
    ck_assert(!admin_token_equal("s3cret-admin-token-012345678", secret));   /* a prefix */
    ck_assert(!admin_token_equal("s3cret-admin-token-01234567890", secret)); /* longer */
    ck_assert(!admin_token_equal("S3cret-admin-token-0123456789", secret));
    ck_assert(!admin_token_equal("", secret));
    ck_assert(!admin_token_equal("s3cret-admin-token-0123456789\t", secret));
}
END_TEST

Suite *admin_suite(void)
{
    Suite *s = suite_create("admin");
    TCase *tc = tcase_create("token");
    tcase_add_test(tc, token_equal_only_when_identical);
    suite_add_tcase(s, tc);
    return s;
}
