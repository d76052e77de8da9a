/* test_inventory.c - the all-or-nothing reservation decision: reserve when
 * every item is available, else reject with the contract's reason. */
#include "inventory.h"
#include "suites.h"

static const struct stock_level stock[] = {
    {"SKU-1", 10, 0},
    {"SKU-2", 3, 0},
    {"SKU-3", 0, 0},
};
#define NSTOCK (sizeof stock / sizeof stock[0])

START_TEST(all_available_reserves)
{
    const struct order_item items[] = {{"SKU-1", 4}, {"SKU-2", 1}};
    const char *reason = "unset";
    ck_assert_int_eq(inventory_decide(items, 2, stock, NSTOCK, &reason), REPLY_RESERVED);
    ck_assert_ptr_null(reason);
}
END_TEST

START_TEST(exact_availability_reserves)
{
    const struct order_item items[] = {{"SKU-1", 10}, {"SKU-2", 3}};
    const char *reason = "unset";
    ck_assert_int_eq(inventory_decide(items, 2, stock, NSTOCK, &reason), REPLY_RESERVED);
}
END_TEST

START_TEST(one_short_item_rejects_the_order)
{
    const struct order_item items[] = {{"SKU-1", 1}, {"SKU-2", 4}};
    const char *reason = NULL;
    ck_assert_int_eq(inventory_decide(items, 2, stock, NSTOCK, &reason), REPLY_REJECTED);
    ck_assert_str_eq(reason, "insufficient_stock");
}
END_TEST

START_TEST(zero_stock_rejects)
{
    const struct order_item items[] = {{"SKU-3", 1}};
    const char *reason = NULL;
    ck_assert_int_eq(inventory_decide(items, 1, stock, NSTOCK, &reason), REPLY_REJECTED);
    ck_assert_str_eq(reason, "insufficient_stock");
}
END_TEST

START_TEST(unknown_sku_rejects)
{
    const struct order_item items[] = {{"SKU-1", 1}, {"NOPE", 1}};
    const char *reason = NULL;
    ck_assert_int_eq(inventory_decide(items, 2, stock, NSTOCK, &reason), REPLY_REJECTED);
    ck_assert_str_eq(reason, "unknown_sku");
}
END_TEST

START_TEST(unknown_sku_wins_over_short_item)
{
    /* the short item comes first; the unknown one still decides the reason */
    const struct order_item items[] = {{"SKU-2", 99}, {"NOPE", 1}};
    const char *reason = NULL;
    ck_assert_int_eq(inventory_decide(items, 2, stock, NSTOCK, &reason), REPLY_REJECTED);
    ck_assert_str_eq(reason, "unknown_sku");
    const struct order_item reversed[] = {{"NOPE", 1}, {"SKU-2", 99}};
    reason = NULL;
    ck_assert_int_eq(inventory_decide(reversed, 2, stock, NSTOCK, &reason), REPLY_REJECTED);
    ck_assert_str_eq(reason, "unknown_sku");
}
END_TEST

START_TEST(no_stock_rows_means_unknown_sku)
{
    const struct order_item items[] = {{"SKU-1", 1}};
    const char *reason = NULL;
    ck_assert_int_eq(inventory_decide(items, 1, NULL, 0, &reason), REPLY_REJECTED);
    ck_assert_str_eq(reason, "unknown_sku");
}
END_TEST

START_TEST(orders_of_one_batch_see_what_earlier_ones_took)
{
    struct stock_level lv[] = {{"SKU-1", 10, 0}, {"SKU-2", 3, 0}};
    const struct order_item one[] = {{"SKU-1", 1}};
    int reserved = 0, rejected = 0;
    for (int i = 0; i < 50; i++) {
        const char *reason = NULL;
        if (inventory_decide(one, 1, lv, 2, &reason) == REPLY_RESERVED) {
            inventory_take(lv, 2, one, 1);
            reserved++;
        } else {
            ck_assert_str_eq(reason, "insufficient_stock");
            rejected++;
        }
    }
    ck_assert_int_eq(reserved, 10);
    ck_assert_int_eq(rejected, 40);
    ck_assert_int_eq(lv[0].available, 0);
    ck_assert_int_eq(lv[0].taken, 10); /* what the batch writes to the stock row */
    ck_assert_int_eq(lv[1].available, 3); /* untouched */
    ck_assert_int_eq(lv[1].taken, 0);
}
END_TEST

START_TEST(take_subtracts_every_item)
{
    struct stock_level lv[] = {{"SKU-1", 10, 0}, {"SKU-2", 3, 0}};
    const struct order_item items[] = {{"SKU-2", 2}, {"SKU-1", 4}};
    inventory_take(lv, 2, items, 2);
    ck_assert_int_eq(lv[0].available, 6);
    ck_assert_int_eq(lv[1].available, 1);
    ck_assert_int_eq(lv[0].taken, 4);
    ck_assert_int_eq(lv[1].taken, 2);
}
END_TEST

Suite *inventory_suite(void)
{
    Suite *s = suite_create("inventory");
    TCase *tc = tcase_create("decide");
    tcase_add_test(tc, all_available_reserves);
    tcase_add_test(tc, exact_availability_reserves);
    tcase_add_test(tc, one_short_item_rejects_the_order);
    tcase_add_test(tc, zero_stock_rejects);
    tcase_add_test(tc, unknown_sku_rejects);
    tcase_add_test(tc, unknown_sku_wins_over_short_item);
    tcase_add_test(tc, no_stock_rows_means_unknown_sku);
    tcase_add_test(tc, orders_of_one_batch_see_what_earlier_ones_took);
    tcase_add_test(tc, take_subtracts_every_item);
    suite_add_tcase(s, tc);
    return s;
}
