package dtmstore_test

import (
	"context"
	"database/sql"
	"log"

	_ "github.com/go-sql-driver/mysql"

	"github.com/opencoupon/coupon/sql/dtmstore"
)

// The database must exist; Apply creates the tables DTM's MySQL store uses.
func ExampleApply() {
	db, err := sql.Open("mysql", "root@tcp(127.0.0.1:3306)/coupon_dtm")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := dtmstore.Apply(context.Background(), db); err != nil {
		log.Fatal(err)
	}
}
