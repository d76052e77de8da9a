/* err.c - text for the project's error codes (see err.h). */
#include "err.h"

static const char *const err_text[] = {
#define ERR_TEXT(name, text) [ERR_##name] = text,
    ERR_TABLE(ERR_TEXT)
#undef ERR_TEXT
};

const char *err_str(enum err e)
{
    if ((int)e < 0 || e >= ERR__COUNT)
        return "unknown error";
    return err_text[e];
}
