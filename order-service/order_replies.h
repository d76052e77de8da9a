/* order_replies.h - the inbox handler that turns inventory replies into
 * order status (CONFIRMED / REJECTED). */
#ifndef ORDER_REPLIES_H
#define ORDER_REPLIES_H

#include "inbox.h"

extern const struct inbox_handler order_replies_handler;

#endif
