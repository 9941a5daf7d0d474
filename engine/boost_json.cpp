// Boost.JSON is used header-only: its implementation is compiled once, here, for the whole
// program. Every other file includes <boost/json.hpp> only.
#include <boost/json/src.hpp>
