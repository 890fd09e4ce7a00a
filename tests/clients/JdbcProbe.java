// PgJDBC (Debian's libpostgresql-jdbc-java) through a connection given on the command line
// (host port user password db), with server-prepared statements and binary transfer from the
// first execution (prepareThreshold=-1): text[], int8 and int4[] come back in binary, the
// rest in text. Run as a single source file: java -cp postgresql.jar JdbcProbe.java ...
// Prints JSON.
import java.sql.*;
import java.util.*;

public class JdbcProbe {
    static final String[][] QUERIES = {
        {"profiles", "SELECT id, tier, risk, tags, contact, card_number, pin, scores FROM customer_profiles ORDER BY id"},
        {"star", "SELECT id, name, email, card, ssn, balance FROM customers_pii ORDER BY id"},
        {"email_array", "SELECT array_agg(email ORDER BY id) FROM customers_pii"},
        {"card_bigint", "SELECT card_number FROM customer_profiles ORDER BY id"},
    };

    static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    static String json(Object v) throws SQLException {
        if (v == null) return "null";
        if (v instanceof Array a) return json(a.getArray());
        if (v instanceof Object[] arr) {
            StringJoiner j = new StringJoiner(",", "[", "]");
            for (Object o : arr) j.add(json(o));
            return j.toString();
        }
        if (v instanceof Number || v instanceof Boolean) {
            if (v instanceof java.math.BigDecimal d) return quote(d.toPlainString());
            return v.toString();
        }
        return quote(v.toString());
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/" + args[4]
            + "?sslmode=disable&prepareThreshold=-1";
        StringJoiner out = new StringJoiner(",", "{", "}");
        try (Connection c = DriverManager.getConnection(url, args[2], args[3])) {
            for (String[] q : QUERIES) {
                try (PreparedStatement st = c.prepareStatement(q[1]); ResultSet rs = st.executeQuery()) {
                    int n = rs.getMetaData().getColumnCount();
                    StringJoiner rows = new StringJoiner(",", "[", "]");
                    while (rs.next()) {
                        StringJoiner row = new StringJoiner(",", "[", "]");
                        for (int i = 1; i <= n; i++) row.add(json(rs.getObject(i)));
                        rows.add(row.toString());
                    }
                    out.add(quote(q[0]) + ":" + rows);
                } catch (SQLException e) {
                    out.add(quote(q[0]) + ":{\"error\":" + quote(e.getMessage()) + "}");
                }
            }
        }
        System.out.println(out);
    }
}
